//! A node's transport: a `ractor_cluster` node server bound to loopback by default, guarded by
//! the cluster cookie (and optionally mutual TLS), plus warden's heartbeat failure detector
//! between nodes. The Raft group and everything above it travel in these sessions.
//!
//! ractor_cluster notices a killed peer when its socket closes and never notices a frozen one
//! (its pings have no deadline). Each warden node therefore runs a heartbeat receiver (a
//! ractor actor in the process group [`HEARTBEAT_GROUP`], reachable from every connected node)
//! and a monitor task that sends a beat to every remote receiver each
//! [`TransportConfig::heartbeat_interval`] and scores each peer's arrivals with the phi-accrual
//! detector of `warden_core::failure_detector`. A peer goes `Up` -> `Suspected` (phi above
//! [`TransportConfig::suspect_phi`]) -> `Down` (phi above the detector's threshold, or its session
//! closed). When warden declares a peer down it ends that peer's session, so a node waking from
//! a freeze cannot deliver a backlog of stale messages into it.
//!
//! ```
//! use warden_cluster::transport::{NodeEvent, Transport, TransportConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Transport::start(TransportConfig::new("alpha", "cluster-cookie")).await?; // 127.0.0.1, a free port
//! assert!(node.addr().ip().is_loopback());
//! let mut events = node.subscribe();
//! // node.connect("127.0.0.1:7001".parse()?).await?; // another node: kept as a seed, rejoined
//! assert!(node.view().live_peers().is_empty());
//! assert!(events.try_recv().is_err()); // no peer yet: no Up, Down or Refused event
//! # let _: Option<NodeEvent> = None;
//! node.stop();
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub use crate::error::ClusterError;
use crate::error::{ConnectProblem, StartProblem, TlsProblem, WatchProblem};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};
use tokio::sync::broadcast;
use warden_core::failure_detector::{PhiAccrual, PhiParams};

/// The process group every node's heartbeat receiver joins.
pub const HEARTBEAT_GROUP: &str = "warden.heartbeat";

/// Mutual TLS between nodes: every node presents a certificate and checks its peer's.
///
/// Build the two rustls configurations as your PKI requires; for a private cluster CA, the
/// server side uses `WebPkiClientVerifier` (client certificates required) and the client side
/// presents its certificate with `with_client_auth_cert`. `server_name` is the name the nodes'
/// certificates are issued for.
#[derive(Clone)]
pub struct TlsSettings {
    /// Accepting side.
    pub server: Arc<tokio_rustls::rustls::ServerConfig>,
    /// Connecting side.
    pub client: Arc<tokio_rustls::rustls::ClientConfig>,
    /// The name checked in the peer's certificate.
    pub server_name: String,
}

impl TlsSettings {
    /// Mutual TLS for a private cluster CA, from PEM files: the CA certificate(s) every node
    /// trusts, this node's certificate chain and its private key; `server_name` is the name the
    /// certificates are issued for. Errors name the file and what is wrong with it.
    pub fn from_pem_files(
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
        server_name: impl Into<String>,
    ) -> Result<TlsSettings, ClusterError> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |path: &std::path::Path, cause: TlsProblem| ClusterError::Tls { path: path.to_path_buf(), cause };
        let certs = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, ClusterError> {
            let certs: Vec<_> = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(path, TlsProblem::Pem(e)))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(path, TlsProblem::Pem(e)))?;
            if certs.is_empty() {
                return Err(bad(path, TlsProblem::NoCertificate));
            }
            Ok(certs)
        };
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        for c in certs(ca)? {
            roots.add(c).map_err(|e| bad(ca, TlsProblem::Rustls(e)))?;
        }
        let roots = Arc::new(roots);
        let chain = certs(cert)?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, TlsProblem::Pem(e)))?;
        let verifier = tokio_rustls::rustls::server::WebPkiClientVerifier::builder(roots.clone())
            .build()
            .map_err(|e| bad(ca, TlsProblem::Verifier(e)))?;
        let server = tokio_rustls::rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key_der.clone_key())
            .map_err(|e| bad(cert, TlsProblem::Rustls(e)))?;
        let client = tokio_rustls::rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)
            .map_err(|e| bad(cert, TlsProblem::Rustls(e)))?;
        Ok(TlsSettings { server: Arc::new(server), client: Arc::new(client), server_name: server_name.into() })
    }
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings").field("server_name", &self.server_name).finish()
    }
}

/// How a node is run.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The node's name, unique in the cluster.
    pub name: String,
    /// The cluster cookie: peers with another cookie are refused.
    pub cookie: String,
    /// The address to listen on (default 127.0.0.1: other machines cannot connect unless asked).
    pub bind: IpAddr,
    /// The port (0: a free one is chosen).
    pub port: u16,
    /// How often a node sends a heartbeat to each peer (default 100 ms).
    pub heartbeat_interval: Duration,
    /// The peer detector's parameters (default: threshold 8, 50 ms minimum deviation, 600 ms
    /// acceptable pause, so that a frozen peer is declared down after about a second).
    pub detector: PhiParams,
    /// phi above which a peer is reported `Suspected` (default 1).
    pub suspect_phi: f64,
    /// A connection that has not completed the handshake after this long is closed and
    /// reported as refused (default 5 s; ractor_cluster alone keeps it open forever).
    pub handshake_timeout: Duration,
    /// Mutual TLS between nodes (default: none, plain TCP with the cookie).
    pub tls: Option<TlsSettings>,
    /// TLS handshakes in progress at once (default [`MAX_TLS_HANDSHAKES`]); a connection
    /// accepted past it is closed at once and reported as refused.
    pub max_tls_handshakes: usize,
    /// Remote actors watched at once (default [`MAX_WATCHES`]); [`Transport::watch`] past it
    /// fails, naming the bound. A watch goes when it fires or when its receiver is dropped.
    pub max_watches: usize,
}

/// Default of [`TransportConfig::max_watches`]: remote actors watched at once.
pub const MAX_WATCHES: usize = 65_536;

/// Default of [`TransportConfig::max_tls_handshakes`]: connections in their TLS handshake.
pub const MAX_TLS_HANDSHAKES: usize = 64;

impl TransportConfig {
    /// A loopback node named `name` with `cookie` and the default detector.
    pub fn new(name: impl Into<String>, cookie: impl Into<String>) -> Self {
        TransportConfig {
            name: name.into(),
            cookie: cookie.into(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            heartbeat_interval: Duration::from_millis(100),
            detector: PhiParams {
                threshold: 8.0,
                max_samples: 200,
                min_std_deviation: Duration::from_millis(50),
                acceptable_pause: Duration::from_millis(600),
                first_heartbeat_estimate: Duration::from_millis(100),
            },
            suspect_phi: 1.0,
            handshake_timeout: Duration::from_secs(5),
            tls: None,
            max_tls_handshakes: MAX_TLS_HANDSHAKES,
            max_watches: MAX_WATCHES,
        }
    }
}

/// What a node sees of its peers; also logged under target `warden::cluster`. Its JSON shape
/// (what `warden node` and the demo nodes print): `{"kind": "down", "peer": ..., "cause":
/// {"why": "session_closed"}, "silent_ms": ...}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeEvent {
    /// A peer completed the handshake (cookie accepted).
    Up {
        /// The peer's node name.
        peer: String,
        /// Its address.
        addr: String,
    },
    /// A peer's heartbeats are late.
    Suspected {
        /// The peer's node name.
        peer: String,
        /// Its suspicion level.
        phi: f64,
    },
    /// A suspected peer's heartbeats are on time again.
    Recovered {
        /// The peer's node name.
        peer: String,
    },
    /// A peer is declared down; its session was ended.
    Down {
        /// The peer's node name.
        peer: String,
        /// Why.
        cause: DownCause,
        /// Time since its last heartbeat (in JSON: `silent_ms`, whole milliseconds).
        #[serde(rename = "silent_ms", with = "millis")]
        silent_for: Duration,
    },
    /// A connection was refused (wrong cookie or a handshake that failed).
    Refused {
        /// The peer's address.
        addr: String,
        /// Why.
        cause: RefusedCause,
    },
}

/// Why a peer was declared down ([`NodeEvent::Down`]). Its `Display` is the text the log
/// line carries.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum DownCause {
    /// Its heartbeats stopped: the detector's suspicion level passed the threshold.
    #[error("no heartbeat (phi {phi:.1})")]
    NoHeartbeat {
        /// The suspicion level when it was declared down.
        phi: f64,
    },
    /// Its session ended (the process exited, or the connection closed).
    #[error("session closed")]
    SessionClosed,
}

/// Why a connection was refused ([`NodeEvent::Refused`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum RefusedCause {
    /// The session ended before authenticating: a wrong cookie, or not a warden node.
    #[error("the handshake did not complete (wrong cookie, or not a warden node)")]
    Handshake,
    /// No completed handshake within [`TransportConfig::handshake_timeout`].
    #[error("no completed handshake within {ms} ms; connection closed")]
    HandshakeTimeout {
        /// The limit (milliseconds).
        ms: u64,
    },
    /// [`TransportConfig::max_tls_handshakes`] handshakes were already in progress.
    #[error("{max} TLS handshakes already in progress; connection closed")]
    TooManyTlsHandshakes {
        /// The cap.
        max: usize,
    },
    /// The TLS handshake failed (rustls's error, as its text: the event is plain data).
    #[error("TLS handshake failed: {error}")]
    Tls {
        /// What rustls said.
        error: String,
    },
    /// No TLS handshake within [`TransportConfig::handshake_timeout`].
    #[error("no TLS handshake within {ms} ms; connection closed")]
    TlsTimeout {
        /// The limit (milliseconds).
        ms: u64,
    },
}

/// Whole milliseconds of `d`, saturating.
fn whole_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A duration as whole milliseconds, for [`NodeEvent`]'s JSON.
mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::whole_ms(*d))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms: u64 = serde::Deserialize::deserialize(d)?;
        Ok(Duration::from_millis(ms))
    }
}

#[derive(Debug)]
struct Peer {
    detector: PhiAccrual,
    last: Instant,
    suspected: bool,
    down: bool,
}

impl Peer {
    /// A fresh history, last heard from `now`.
    fn new(params: PhiParams, now: Instant) -> Self {
        Peer { detector: PhiAccrual::new(params), last: now, suspected: false, down: false }
    }
}

/// One watched remote actor.
struct Watch {
    cell: ractor::ActorCell,
    peer: String,
    tx: tokio::sync::oneshot::Sender<RemoteDown>,
}

/// Why a watched remote actor is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteDown {
    /// The actor exited (its node said so).
    Exited {
        /// The actor.
        actor: String,
        /// Its node.
        node: String,
    },
    /// Its node was declared down (killed, frozen or unreachable): the actor is presumed gone.
    NodeDown {
        /// The actor.
        actor: String,
        /// Its node.
        node: String,
    },
}

/// A session in its handshake: when it opened, its actor, the peer's address.
type Handshake = (Instant, ActorRef<ractor_cluster::NodeSessionMessage>, String);

struct Shared {
    name: String,
    config: TransportConfig,
    origin: Instant,
    peers: Mutex<HashMap<String, Peer>>,
    /// Sessions that completed the handshake, by node id.
    authenticated: Mutex<std::collections::HashSet<u64>>,
    /// Remote actors being watched.
    watches: Mutex<Vec<Watch>>,
    /// Addresses this node was asked to connect to, and the peer each is when up: the monitor
    /// connects again to those that are not (a peer back from a freeze or a restart rejoins).
    seeds: Mutex<Vec<(SocketAddr, Option<String>)>>,
    /// Sessions still in their handshake: when they opened, and their actor.
    handshaking: Mutex<HashMap<u64, Handshake>>,
    /// The node name behind each live ractor_cluster session (to place remote actors); an
    /// entry goes when its session ends.
    node_ids: Mutex<HashMap<u64, String>>,
    events: broadcast::Sender<NodeEvent>,
}

impl Shared {
    fn emit(&self, event: NodeEvent) {
        match &event {
            NodeEvent::Up { peer, addr } => {
                tracing::info!(target: "warden::cluster", node = %self.name, peer = %peer, addr = %addr, "peer up")
            }
            NodeEvent::Suspected { peer, phi } => {
                tracing::warn!(target: "warden::cluster", node = %self.name, peer = %peer, phi, "peer suspected")
            }
            NodeEvent::Recovered { peer } => {
                tracing::info!(target: "warden::cluster", node = %self.name, peer = %peer, "peer recovered")
            }
            NodeEvent::Down { peer, cause, silent_for } => {
                tracing::error!(target: "warden::cluster", node = %self.name, peer = %peer, cause = %cause, silent_ms = silent_for.as_millis() as u64, "peer down")
            }
            NodeEvent::Refused { addr, cause } => {
                tracing::warn!(target: "warden::cluster", node = %self.name, addr = %addr, cause = %cause, "connection refused")
            }
        }
        let _ = self.events.send(event);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Peer>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A heartbeat from `peer` arrived.
    fn beat(&self, peer: &str) {
        let now = Instant::now();
        let at = now.duration_since(self.origin);
        let mut peers = self.lock();
        let p = peers.entry(peer.to_string()).or_insert_with(|| Peer::new(self.config.detector, now));
        if p.down {
            return; // a peer declared down must rejoin with a new session
        }
        p.detector.heartbeat(at);
        p.last = now;
        if p.suspected {
            p.suspected = false;
            drop(peers);
            self.emit(NodeEvent::Recovered { peer: peer.to_string() });
        }
    }

    /// Scores every peer; returns those that just went down.
    fn evaluate(&self) -> Vec<String> {
        let now = Instant::now();
        let at = now.duration_since(self.origin);
        let mut events = Vec::new();
        let mut downs = Vec::new();
        {
            let mut peers = self.lock();
            for (name, p) in peers.iter_mut().filter(|(_, p)| !p.down) {
                let phi = p.detector.phi(at);
                if p.detector.is_suspect(at) {
                    p.down = true;
                    downs.push(name.clone());
                    events.push(NodeEvent::Down {
                        peer: name.clone(),
                        cause: DownCause::NoHeartbeat { phi },
                        silent_for: now.duration_since(p.last),
                    });
                } else if phi > self.config.suspect_phi && !p.suspected {
                    p.suspected = true;
                    events.push(NodeEvent::Suspected { peer: name.clone(), phi });
                }
            }
        }
        for e in events {
            self.emit(e);
        }
        downs
    }

    /// The session of `peer` closed: it is down now (unless already).
    fn closed(&self, peer: &str) {
        let now = Instant::now();
        let silent_for = {
            let mut peers = self.lock();
            // A peer that closes before its first heartbeat arrived is down all the same.
            let p = peers.entry(peer.to_string()).or_insert_with(|| Peer::new(self.config.detector, now));
            if p.down {
                return;
            }
            p.down = true;
            now.duration_since(p.last)
        };
        self.emit(NodeEvent::Down { peer: peer.to_string(), cause: DownCause::SessionClosed, silent_for });
    }
}

/// ractor_cluster names a session's peer `name@host`; warden's events use the node name.
fn node_name(session_name: &str) -> &str {
    session_name.split_once('@').map_or(session_name, |(n, _)| n)
}

/// Receives heartbeats from other nodes: its message is the sender's name (a `String`, which
/// ractor_cluster serialises).
struct Receiver {
    shared: Arc<Shared>,
}

impl Actor for Receiver {
    type Msg = String;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<String>, _: ()) -> Result<(), ActorProcessingErr> {
        ractor::pg::join(HEARTBEAT_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(())
    }

    async fn handle(&self, _: ActorRef<String>, from: String, _: &mut ()) -> Result<(), ActorProcessingErr> {
        if from != self.shared.name {
            self.shared.beat(&from);
        }
        Ok(())
    }
}

/// Turns ractor_cluster's session callbacks into node events.
struct Sessions {
    shared: Arc<Shared>,
}

impl NodeEventSubscription for Sessions {
    fn node_session_opened(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        self.shared
            .handshaking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ses.node_id, (Instant::now(), ses.actor.clone(), ses.peer_addr.clone()));
    }

    fn node_session_disconnected(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let timed_out =
            self.shared.handshaking.lock().unwrap_or_else(PoisonError::into_inner).remove(&ses.node_id).is_none()
                && !self.shared.authenticated.lock().unwrap_or_else(PoisonError::into_inner).contains(&ses.node_id);
        if timed_out {
            return; // already reported when the handshake timed out
        }
        let authenticated =
            self.shared.authenticated.lock().unwrap_or_else(PoisonError::into_inner).remove(&ses.node_id);
        // The session's actors are gone with it: its name entry goes too (one per live session).
        self.shared.node_ids.lock().unwrap_or_else(PoisonError::into_inner).remove(&ses.node_id);
        match ses.peer_name {
            Some(name) if authenticated => self.shared.closed(node_name(&name.name)),
            // ractor_cluster alone only shows "opened, then disconnected": a session that never
            // authenticated was refused (wrong cookie, or not a node at all).
            _ => self.shared.emit(NodeEvent::Refused { addr: ses.peer_addr.clone(), cause: RefusedCause::Handshake }),
        }
    }

    fn node_session_authenticated(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        self.shared.handshaking.lock().unwrap_or_else(PoisonError::into_inner).remove(&ses.node_id);
        self.shared.authenticated.lock().unwrap_or_else(PoisonError::into_inner).insert(ses.node_id);
    }

    fn node_session_ready(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        if let Some(name) = &ses.peer_name {
            let peer = node_name(&name.name).to_string();
            // A (re)joining peer starts a fresh history, with the handshake as its first sign
            // of life: a peer that freezes before its first heartbeat is still detected.
            self.shared.node_ids.lock().unwrap_or_else(PoisonError::into_inner).insert(ses.node_id, peer.clone());
            let now = Instant::now();
            let mut fresh = Peer::new(self.shared.config.detector, now);
            fresh.detector.heartbeat(now.duration_since(self.shared.origin));
            self.shared.lock().insert(peer.clone(), fresh);
            if let Ok(addr) = ses.peer_addr.parse::<SocketAddr>() {
                let mut seeds = self.shared.seeds.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(seed) = seeds.iter_mut().find(|(a, _)| *a == addr) {
                    seed.1 = Some(peer.clone());
                }
            }
            self.shared.emit(NodeEvent::Up { peer, addr: ses.peer_addr.clone() });
        }
    }
}

/// How a node sees a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Its heartbeats arrive.
    Up,
    /// Its phi is past the suspicion threshold, but it is not declared down.
    Suspected,
    /// Declared down (phi past the down threshold, or its connection closed).
    Down,
}

impl std::fmt::Display for PeerState {
    /// `up`, `suspected` or `down`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerState::Up => "up",
            PeerState::Suspected => "suspected",
            PeerState::Down => "down",
        })
    }
}

/// One peer as a node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    /// Its name.
    pub name: String,
    /// Its phi-accrual suspicion level now (infinite once down).
    pub phi: f64,
    /// Its state.
    pub state: PeerState,
    /// Time since its last heartbeat (or its handshake).
    pub silent_ms: u64,
}

/// What a node currently believes about the cluster: which peers are up, and where a remote
/// actor lives. Cheap to clone.
#[derive(Clone)]
pub struct NodeView {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for NodeView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeView").field("name", &self.shared.name).finish()
    }
}

impl NodeView {
    /// This node's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The peers this node has a session with and has not declared down (suspected ones
    /// included), sorted.
    pub fn live_peers(&self) -> Vec<String> {
        let mut live: Vec<String> =
            self.shared.lock().iter().filter(|(_, p)| !p.down).map(|(name, _)| name.clone()).collect();
        live.sort();
        live
    }

    /// Every peer this node has heard of, with its suspicion level now (phi) and its state
    /// (`up`, `suspected` or `down`), sorted by name.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        let at = now.duration_since(self.shared.origin);
        let mut peers: Vec<PeerStatus> = self
            .shared
            .lock()
            .iter()
            .map(|(name, p)| PeerStatus {
                name: name.clone(),
                phi: if p.down { f64::INFINITY } else { p.detector.phi(at) },
                state: if p.down {
                    PeerState::Down
                } else if p.suspected {
                    PeerState::Suspected
                } else {
                    PeerState::Up
                },
                silent_ms: now.duration_since(p.last).as_millis() as u64,
            })
            .collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        peers
    }

    /// The name of the node `actor` runs on: this node for a local actor, the peer for a
    /// remote one (`None` for a node id never seen).
    pub fn node_of(&self, actor: &ractor::ActorCell) -> Option<String> {
        let id = actor.get_id();
        if id.is_local() {
            return Some(self.shared.name.clone());
        }
        self.shared.node_ids.lock().unwrap_or_else(PoisonError::into_inner).get(&id.node()).cloned()
    }

    /// Node events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.shared.events.subscribe()
    }
}

/// A running node.
pub struct Transport {
    shared: Arc<Shared>,
    server: ActorRef<NodeServerMessage>,
    receiver: ActorRef<String>,
    monitor: tokio::task::JoinHandle<()>,
    acceptor: Option<tokio::task::JoinHandle<()>>,
    addr: SocketAddr,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("name", &self.shared.name).field("addr", &self.addr).finish()
    }
}

fn free_port(ip: IpAddr) -> std::io::Result<u16> {
    // ractor_cluster does not report the port it picks for 0; ask the OS for one first.
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

impl Transport {
    /// Starts the node server, the heartbeat receiver and the monitor.
    ///
    /// With TLS, warden accepts connections itself: it completes the TLS handshake (bounded by
    /// the handshake timeout, reporting failures as [`NodeEvent::Refused`]) and hands the
    /// encrypted stream to ractor_cluster. ractor_cluster's own listener, which would run TLS
    /// handshakes one at a time and report failures only as a log line, then listens on a
    /// second, loopback-only port that still requires the cookie.
    pub async fn start(config: TransportConfig) -> Result<Transport, ClusterError> {
        let start_err = |cause: StartProblem| ClusterError::Start {
            name: config.name.clone(),
            addr: SocketAddr::new(config.bind, config.port),
            cause,
        };
        let front = match &config.tls {
            Some(_) => Some(
                tokio::net::TcpListener::bind((config.bind, config.port))
                    .await
                    .map_err(|e| start_err(StartProblem::Listen(e)))?,
            ),
            None => None,
        };
        let inner_ip = if front.is_some() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { config.bind };
        let port = match (&front, config.port) {
            (None, 0) | (Some(_), _) => free_port(inner_ip).map_err(|e| start_err(StartProblem::FreePort(e)))?,
            (None, p) => p,
        };
        let addr = match &front {
            Some(l) => l.local_addr().map_err(|e| start_err(StartProblem::LocalAddr(e)))?,
            None => SocketAddr::new(config.bind, port),
        };
        let server =
            NodeServer::new(port, config.cookie.clone(), config.name.clone(), inner_ip.to_string(), None, None)
                .with_listen_addr(inner_ip);
        let (server, _) = Actor::spawn(None, server, ()).await.map_err(|e| start_err(StartProblem::Server(e)))?;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            config: config.clone(),
            origin: Instant::now(),
            peers: Mutex::new(HashMap::new()),
            authenticated: Mutex::new(Default::default()),
            handshaking: Mutex::new(HashMap::new()),
            node_ids: Mutex::new(HashMap::new()),
            watches: Mutex::new(Vec::new()),
            seeds: Mutex::new(Vec::new()),
            events,
        });
        let _ = server.cast(NodeServerMessage::SubscribeToEvents {
            id: "warden".into(),
            subscription: Box::new(Sessions { shared: shared.clone() }),
        });
        let (receiver, _) = Actor::spawn(None, Receiver { shared: shared.clone() }, ())
            .await
            .map_err(|e| start_err(StartProblem::Receiver(e)))?;
        let monitor = tokio::spawn(monitor(shared.clone(), server.clone()));
        let acceptor = match (front, &config.tls) {
            (Some(listener), Some(tls)) => {
                Some(tokio::spawn(accept_tls(listener, tls.clone(), shared.clone(), server.clone())))
            }
            _ => None,
        };
        Ok(Transport { shared, server, receiver, monitor, acceptor, addr })
    }

    /// The address peers connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Node events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.shared.events.subscribe()
    }

    /// A cheap handle on the node's view of the cluster, for services that outlive a borrow.
    pub fn view(&self) -> NodeView {
        NodeView { shared: self.shared.clone() }
    }

    /// Keeps `addr` as a seed if it is not one yet (the node connects to it within about a
    /// second, and again whenever that peer is not up).
    pub fn add_seed(&self, addr: SocketAddr) {
        let mut seeds = self.shared.seeds.lock().unwrap_or_else(PoisonError::into_inner);
        if !seeds.iter().any(|(a, _)| *a == addr) {
            push_seed(&mut seeds, addr, None, &self.shared.name);
        }
    }

    /// Forgets the seed at `addr` (a member that left): the node no longer reconnects to it.
    pub fn remove_seed(&self, addr: SocketAddr) {
        self.shared.seeds.lock().unwrap_or_else(PoisonError::into_inner).retain(|(a, _)| *a != addr);
    }

    /// Keeps `addr` as the seed of the peer named `peer`: the node connects to it only while
    /// no session with that peer is up, whichever side opened the session (a peer that
    /// connected to us shows its outgoing port, not the address it listens on).
    pub fn add_named_seed(&self, addr: SocketAddr, peer: &str) {
        let mut seeds = self.shared.seeds.lock().unwrap_or_else(PoisonError::into_inner);
        match seeds.iter_mut().find(|(a, _)| *a == addr) {
            Some(seed) => seed.1 = Some(peer.to_string()),
            None => push_seed(&mut seeds, addr, Some(peer.to_string()), &self.shared.name),
        }
    }

    /// Connects to the node at `addr` (the handshake completes asynchronously: watch for
    /// [`NodeEvent::Up`] or [`NodeEvent::Refused`]) and keeps it as a seed: whenever that peer
    /// is not up, the node connects to it again (about once a second).
    pub async fn connect(&self, addr: SocketAddr) -> Result<(), ClusterError> {
        {
            let mut seeds = self.shared.seeds.lock().unwrap_or_else(PoisonError::into_inner);
            if !seeds.iter().any(|(a, _)| *a == addr) {
                push_seed(&mut seeds, addr, None, &self.shared.name);
            }
        }
        connect_to(&self.server, &self.shared, addr).await
    }

    /// Watches an actor on another node (a member of a process group, say): the receiver gets
    /// [`RemoteDown::Exited`] when it exits, or [`RemoteDown::NodeDown`] when its node is
    /// declared down, whichever comes first (checked every heartbeat interval). Errors if the
    /// actor is local (use ractor's supervision for those), its node is not connected, or
    /// [`TransportConfig::max_watches`] actors are watched already. Dropping the receiver ends
    /// the watch (at the next check).
    pub async fn watch(
        &self,
        actor: ractor::ActorCell,
    ) -> Result<tokio::sync::oneshot::Receiver<RemoteDown>, ClusterError> {
        let id = actor.get_id();
        let err = |cause: WatchProblem| ClusterError::Watch { actor: id.to_string(), cause };
        if id.is_local() {
            return Err(err(WatchProblem::Local));
        }
        // `call!` without a timeout fails only when the server is gone.
        let sessions =
            ractor::call!(self.server, NodeServerMessage::GetSessions).map_err(|_| err(WatchProblem::ServerGone))?;
        let peer = sessions
            .values()
            .find(|s| s.node_id == id.node())
            .and_then(|s| s.peer_name.as_ref())
            .map(|n| node_name(&n.name).to_string())
            .ok_or_else(|| err(WatchProblem::NotConnected(id.node())))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut watches = self.shared.watches.lock().unwrap_or_else(PoisonError::into_inner);
        let max = self.shared.config.max_watches;
        if watches.len() >= max {
            return Err(err(WatchProblem::TooMany { max }));
        }
        watches.push(Watch { cell: actor, peer, tx });
        Ok(rx)
    }

    /// How many remote actors are watched now (watches not yet fired, whose receiver is kept).
    pub fn watches(&self) -> usize {
        self.shared.watches.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Stops the node.
    pub fn stop(&self) {
        self.monitor.abort();
        if let Some(a) = &self.acceptor {
            a.abort();
        }
        self.receiver.stop(None);
        self.server.stop(None);
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends heartbeats to every remote receiver and scores the peers, every interval; ends the
/// sessions of peers declared down.
async fn monitor(shared: Arc<Shared>, server: ActorRef<NodeServerMessage>) {
    let mut tick = tokio::time::interval(shared.config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Rejoin attempts about once a second.
    let rejoin_every =
        (Duration::from_secs(1).as_millis() / shared.config.heartbeat_interval.as_millis().max(1)).max(1) as u64;
    let mut rounds = 0u64;
    loop {
        tick.tick().await;
        for member in ractor::pg::get_members(&HEARTBEAT_GROUP.to_string()) {
            if !member.get_id().is_local() {
                let _ = ActorRef::<String>::from(member).cast(shared.name.clone());
            }
        }
        for peer in shared.evaluate() {
            end_session(&server, &peer).await;
        }
        close_stalled_handshakes(&shared);
        check_watches(&shared);
        rounds += 1;
        if rounds.is_multiple_of(rejoin_every) {
            rejoin_seeds(&shared, &server).await;
        }
    }
}

/// Accepts TLS connections: each handshake runs in its own task, bounded by the handshake
/// timeout, at most `max_tls_handshakes` at once (a connection past that is closed at once);
/// an established stream goes to ractor_cluster, a failure becomes a `Refused` event.
async fn accept_tls(
    listener: tokio::net::TcpListener,
    tls: TlsSettings,
    shared: Arc<Shared>,
    server: ActorRef<NodeServerMessage>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
    let max = shared.config.max_tls_handshakes;
    let in_progress = Arc::new(tokio::sync::Semaphore::new(max));
    loop {
        let (stream, peer_addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: do not spin on the error.
                tracing::warn!(target: "warden::cluster", node = %shared.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = in_progress.clone().try_acquire_owned() else {
            drop(stream);
            shared.emit(NodeEvent::Refused {
                addr: peer_addr.to_string(),
                cause: RefusedCause::TooManyTlsHandshakes { max },
            });
            continue;
        };
        let (acceptor, shared, server) = (acceptor.clone(), shared.clone(), server.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let local_addr = match stream.local_addr() {
                Ok(a) => a,
                Err(_) => return,
            };
            let _ = stream.set_nodelay(true);
            let refused = |cause: RefusedCause| shared.emit(NodeEvent::Refused { addr: peer_addr.to_string(), cause });
            match tokio::time::timeout(shared.config.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let stream = ractor_cluster::NetworkStream::TlsServer { peer_addr, local_addr, stream };
                    let _ =
                        server.cast(NodeServerMessage::ConnectionOpened { stream: Box::new(stream), is_server: true });
                }
                Ok(Err(e)) => refused(RefusedCause::Tls { error: e.to_string() }),
                Err(_) => refused(RefusedCause::TlsTimeout { ms: whole_ms(shared.config.handshake_timeout) }),
            }
        });
    }
}

async fn connect_to(
    server: &ActorRef<NodeServerMessage>,
    shared: &Shared,
    addr: SocketAddr,
) -> Result<(), ClusterError> {
    let err = |cause: ConnectProblem| ClusterError::Connect { name: shared.name.clone(), addr, cause: Box::new(cause) };
    match &shared.config.tls {
        None => ractor_cluster::client_connect(server, addr).await.map_err(|e| err(ConnectProblem::Client(e))),
        Some(tls) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(tls.server_name.clone())
                .map_err(|error| err(ConnectProblem::ServerName { name: tls.server_name.clone(), error }))?;
            let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
            ractor_cluster::client_connect_enc(server, addr, connector, name)
                .await
                .map_err(|e| err(ConnectProblem::Client(e)))
        }
    }
}

/// The most seeds a node keeps (addresses it reconnects to); past it a new seed is refused
/// with a warning, and the existing ones stay.
pub const MAX_SEEDS: usize = 1024;

fn push_seed(seeds: &mut Vec<(SocketAddr, Option<String>)>, addr: SocketAddr, peer: Option<String>, me: &str) {
    if seeds.len() >= MAX_SEEDS {
        tracing::warn!(target: "warden::cluster", node = me, %addr, max = MAX_SEEDS, "too many seeds: this one is not kept");
        return;
    }
    seeds.push((addr, peer));
}

/// Connects again to the seeds whose peer is not up (at most once a second).
async fn rejoin_seeds(shared: &Shared, server: &ActorRef<NodeServerMessage>) {
    let lost: Vec<SocketAddr> = {
        let peers = shared.lock();
        let seeds = shared.seeds.lock().unwrap_or_else(PoisonError::into_inner);
        seeds
            .iter()
            .filter(|(_, peer)| match peer {
                Some(p) => peers.get(p).is_none_or(|p| p.down),
                None => true,
            })
            .map(|(a, _)| *a)
            .collect()
    };
    for addr in lost {
        if let Err(e) = connect_to(server, shared, addr).await {
            tracing::debug!(target: "warden::cluster", node = %shared.name, error = %e, "rejoin attempt failed");
        }
    }
}

/// Fires the watches whose actor exited (ractor_cluster stops the local stand-in of a remote
/// actor when its node reports the exit) or whose node is down, and drops those nobody
/// listens to any more (the receiver was dropped).
fn check_watches(shared: &Shared) {
    let fired: Vec<(Watch, RemoteDown)> = {
        let peers = shared.lock();
        let mut watches = shared.watches.lock().unwrap_or_else(PoisonError::into_inner);
        let mut fired = Vec::new();
        let mut i = 0;
        while i < watches.len() {
            let w = &watches[i];
            if w.tx.is_closed() {
                watches.swap_remove(i);
                continue;
            }
            let actor = w.cell.get_id().to_string();
            let node_down = peers.get(&w.peer).is_some_and(|p| p.down);
            let why = if node_down {
                Some(RemoteDown::NodeDown { actor, node: w.peer.clone() })
            } else if w.cell.get_status() == ractor::ActorStatus::Stopped {
                Some(RemoteDown::Exited { actor, node: w.peer.clone() })
            } else {
                None
            };
            match why {
                Some(why) => fired.push((watches.swap_remove(i), why)),
                None => i += 1,
            }
        }
        fired
    };
    for (w, why) in fired {
        tracing::info!(target: "warden::cluster", node = %shared.name, watched = ?why, "watched remote actor gone");
        let _ = w.tx.send(why);
    }
}

/// Closes connections that opened but never completed the handshake in time.
fn close_stalled_handshakes(shared: &Shared) {
    let limit = shared.config.handshake_timeout;
    let stalled: Vec<(ActorRef<ractor_cluster::NodeSessionMessage>, String)> = {
        let mut h = shared.handshaking.lock().unwrap_or_else(PoisonError::into_inner);
        let ids: Vec<u64> = h.iter().filter(|(_, (at, _, _))| at.elapsed() > limit).map(|(id, _)| *id).collect();
        ids.into_iter().filter_map(|id| h.remove(&id)).map(|(_, actor, addr)| (actor, addr)).collect()
    };
    for (actor, addr) in stalled {
        actor.stop(Some("handshake timed out".into()));
        shared.emit(NodeEvent::Refused { addr, cause: RefusedCause::HandshakeTimeout { ms: whole_ms(limit) } });
    }
}

async fn end_session(server: &ActorRef<NodeServerMessage>, peer: &str) {
    let Ok(sessions) = ractor::call!(server, NodeServerMessage::GetSessions) else { return };
    for ses in sessions.values() {
        if ses.peer_name.as_ref().is_some_and(|n| node_name(&n.name) == peer) {
            ses.actor.stop(Some(format!("declared down by warden: {peer}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_past_the_bound_are_not_kept() {
        let mut seeds = Vec::new();
        for port in 0..=MAX_SEEDS as u16 {
            push_seed(&mut seeds, SocketAddr::from(([127, 0, 0, 1], 10_000 + port)), None, "n1");
        }
        assert_eq!(seeds.len(), MAX_SEEDS);
        let last = SocketAddr::from(([127, 0, 0, 1], 10_000 + MAX_SEEDS as u16));
        assert!(!seeds.iter().any(|(a, _)| *a == last), "the seed past the bound is refused");
    }
}
