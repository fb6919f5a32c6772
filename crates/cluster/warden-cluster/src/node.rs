//! A cluster node: a member of one Raft group, which agrees on the membership, on which node
//! holds each singleton and durable key (with fencing tokens), and on every durable write.
//!
//! A node is a [`Transport`] (ractor_cluster sessions, cookie, TLS, heartbeats), an openraft
//! [`Raft`] whose log and state live in the node's data directory, a
//! [`Proposer`], a checkpoint service on the replicated store, a singleton host, and the
//! leader's loop (active while the node leads). [`Node::start`] founds a group (a node with no
//! past and nothing to join), rejoins it (a node whose data directory knows its identity), or
//! joins one through any member's address (a new node, or one restarted with an empty data
//! directory: it comes back under a new id, as a learner, and counts toward majorities only
//! once it has caught up). [`Node::leave`] hands the node's singletons off and takes it out of
//! the group; [`Node::stop`] just stops it (for the others it is a node gone down).
//!
//! ```no_run
//! use warden_cluster::{Node, NodeConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The first node founds the group (explicitly, once); the others join through any member.
//! let first = Node::start(NodeConfig::new("n1", "cookie").data_dir("/var/lib/app/n1").found(), vec![]).await?;
//! let second = Node::start(NodeConfig::new("n2", "cookie").data_dir("/var/lib/app/n2").join(first.addr()), vec![]).await?;
//! second.leave().await?; // hands its singletons off, leaves the group, stops
//! first.stop().await;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use openraft::error::Fatal;
use ractor::{Actor, ActorRef, Message};
use tokio::sync::broadcast;
use warden_checkpoint::{CheckpointConfig, Checkpoints};

use crate::error::StorageProblem;
use crate::events::{ClusterEvent, Events};
use crate::host::{Host, HostParts};
use crate::ledger::{Command, NodeId, Outcome, Refusal};
use crate::proposer::{ProposeError, Proposer};
use crate::raft::appender::Appender;
use crate::raft::log_store::{DiskStall, Identity, LogStore, RaftDb};
use crate::raft::network::{self, CallError, Declined, Handler, Network, NotDone, Reply, Request, RpcActor, RpcMsg};
use crate::raft::standing::LastContact;
use crate::raft::state_machine::{Shared, StateMachine};
use crate::raft::timing::raft_config;
use crate::raft::{Answers, Batch, Member, Raft};
use crate::reads::ReadBarrier;
use crate::route::{Directory, PendingCalls, Routed, Router, RouterOf, RouterParts, SingletonRef, Watches};
use crate::singleton::{Locator, SingletonSpec};
use crate::store::ReplicatedStore;
use crate::transport::{ClusterError, Transport, TransportConfig};

/// How long a new node keeps trying to join through its seeds.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one join request to a member may wait for its answer.
pub const JOIN_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before asking again when no leader is known or a call failed (twice this after
/// the leader declined).
pub const JOIN_RETRY: Duration = Duration::from_millis(100);
/// How long [`Node::leave`] waits for the node's singletons to move and for the group to
/// take it out.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a member waits for the leader when it passes a join request on.
pub const JOIN_FORWARD_TIMEOUT: Duration = Duration::from_secs(4);
/// How often a leaving node asks the group whether it has been taken out yet.
pub const LEAVE_POLL: Duration = Duration::from_millis(200);
/// How often a node makes sure it has a session with every member.
pub const MESH_EVERY: Duration = Duration::from_secs(1);

/// How a node is run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Its transport (name, cookie, address, heartbeats, TLS).
    pub transport: TransportConfig,
    /// Where its Raft log and state live (`None`: in memory, a node with no past).
    pub data_dir: Option<PathBuf>,
    /// Members to join through when the node has no past.
    pub join: Vec<SocketAddr>,
    /// Found a new group when the node has no past (and nothing to join). Off by default: a
    /// node with no state and no member to join refuses to start instead of founding a group
    /// by itself (a founder whose disk was lost would otherwise found a second group beside
    /// the first). Ignored once the node has a past. See [`entry`].
    pub found: bool,
    /// The group's name.
    pub cluster_name: String,
    /// The checkpoint service's settings.
    pub checkpoints: CheckpointConfig,
    /// How many live nodes the group's first placement of singletons waits for, when this
    /// node leads it (Akka's `min-nr-of-members`; 1, the default: none). Set it to the size
    /// of the cluster being started, so that the first node up does not take every singleton
    /// and hand most of them off again as the others join. It applies only until something
    /// was placed once: a group that later loses nodes goes on with the ones it has.
    pub min_members: usize,
    /// How long a node with no past tries to be added to the group through
    /// [`NodeConfig::join`] before [`Node::start`] fails with [`ClusterError::Join`]
    /// ([`JOIN_TIMEOUT`] unless set).
    pub join_timeout: Duration,
    /// How long [`Node::leave`] waits for the group to take the node out before it stops the
    /// node anyway and fails with [`ClusterError::Leave`] ([`LEAVE_TIMEOUT`] unless set).
    pub leave_timeout: Duration,
}

impl NodeConfig {
    /// A loopback node named `name` with `cookie`, in memory, that must be told to join a
    /// group ([`NodeConfig::join`]) or to found one ([`NodeConfig::found`]).
    pub fn new(name: impl Into<String>, cookie: impl Into<String>) -> Self {
        NodeConfig {
            transport: TransportConfig::new(name, cookie),
            data_dir: None,
            join: Vec::new(),
            found: false,
            cluster_name: "warden".into(),
            checkpoints: CheckpointConfig::default(),
            min_members: 1,
            join_timeout: JOIN_TIMEOUT,
            leave_timeout: LEAVE_TIMEOUT,
        }
    }

    /// Gives up an orderly leave after `within` (see [`NodeConfig::leave_timeout`]).
    pub fn leave_timeout(mut self, within: Duration) -> Self {
        self.leave_timeout = within;
        self
    }

    /// Gives up joining after `within` (see [`NodeConfig::join_timeout`]).
    pub fn join_timeout(mut self, within: Duration) -> Self {
        self.join_timeout = within;
        self
    }

    /// The group's first placement waits for `n` live nodes (see [`NodeConfig::min_members`]).
    pub fn min_members(mut self, n: usize) -> Self {
        self.min_members = n.max(1);
        self
    }

    /// Keeps the node's Raft log and state in `dir`.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Joins the group through `addr` (another member) if the node has no past.
    pub fn join(mut self, addr: SocketAddr) -> Self {
        self.join.push(addr);
        self
    }

    /// Founds a new group if the node has no past (see [`NodeConfig::found`]): for the first
    /// node of a new cluster, once.
    pub fn found(mut self) -> Self {
        self.found = true;
        self
    }
}

/// How a starting node enters its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// It has a past (an identity in its data directory): it resumes as that member.
    Resume,
    /// It founds a new group, of which it is the only voter.
    Found,
    /// It asks the members it was given to add it.
    Join,
}

/// Why a node does not start as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryRefused {
    /// No past, no member to join, and not told to found a group.
    #[error(
        "it has no state (no data directory, or an empty one) and nothing to join: give it a member \
         to join (NodeConfig::join, `--join`), or found a new group explicitly (NodeConfig::found, \
         `--found`) for the first node of a new cluster only"
    )]
    NothingToJoin,
    /// No past, and told both to found a group and to join one.
    #[error("it is told both to found a new group and to join one (`--found` with `--join`)")]
    FoundAndJoin,
}

/// The entry rule: a node with a past resumes (whatever it was told); one without founds a
/// group only when told to, and joins when given members; anything else is refused.
pub fn entry(has_past: bool, found: bool, joins: bool) -> Result<Entry, EntryRefused> {
    match (has_past, found, joins) {
        (true, _, _) => Ok(Entry::Resume),
        (false, true, true) => Err(EntryRefused::FoundAndJoin),
        (false, true, false) => Ok(Entry::Found),
        (false, false, true) => Ok(Entry::Join),
        (false, false, false) => Err(EntryRefused::NothingToJoin),
    }
}

/// A running member of the group.
pub struct Node {
    id: NodeId,
    name: String,
    transport: Arc<Transport>,
    raft: Raft,
    shared: Arc<Shared>,
    proposer: Proposer,
    checkpoints: Checkpoints,
    host: Arc<Host>,
    events: Events,
    rpc: ActorRef<RpcMsg>,
    router: ActorRef<Routed>,
    db: RaftDb,
    reads: ReadBarrier,
    locator: Locator,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    leave_timeout: Duration,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("name", &self.name).field("id", &self.id).finish()
    }
}

/// A new node id: random, so that a node restarted with an empty data directory never takes
/// the id of its former self. (Eight random bytes from the standard library's hasher keys,
/// the clock and the pid: a random-number crate for one id is not worth it.)
fn fresh_id() -> NodeId {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.write_u32(std::process::id());
    h.finish().max(1)
}

struct NodeHandler {
    me: NodeId,
    raft: Raft,
    shared: Arc<Shared>,
    appender: Appender,
}

impl Handler for NodeHandler {
    fn forgotten(&self, id: NodeId, after: u64) -> Option<bool> {
        // Only what this node applied counts, and only past `after`: a node that has not
        // applied that far may not know the leaving node yet. Forgotten, or drained and out of
        // the membership (the leader's `Forget` may come later).
        if self.shared.applied() <= after {
            return None;
        }
        let in_membership = {
            let m = self.raft.metrics().borrow().clone();
            let config = m.membership_config.membership();
            config.voter_ids().any(|v| v == id) || config.learner_ids().any(|l| l == id)
        };
        Some(self.shared.read(|l| match l.nodes.get(&id) {
            None => true,
            Some(rec) => rec.draining && !in_membership,
        }))
    }

    fn propose(&self, batch: Batch) -> BoxFuture<'static, Result<(u64, Answers), NotDone>> {
        let appender = self.appender.clone();
        Box::pin(async move { appender.write(batch).await })
    }

    fn read_index(&self) -> BoxFuture<'static, Result<u64, NotDone>> {
        let raft = self.raft.clone();
        Box::pin(async move {
            match raft.ensure_linearizable().await {
                Ok(id) => Ok(id.map_or(0, |l| l.index)),
                Err(e) => Err(NotDone::of_read(e)),
            }
        })
    }

    fn join(&self, id: NodeId, member: Member) -> BoxFuture<'static, Result<(), NotDone>> {
        let (raft, me) = (self.raft.clone(), self.me);
        Box::pin(async move {
            let leader = raft.metrics().borrow().current_leader;
            match leader {
                Some(l) if l == me => {}
                // The new node may reach only the member it joins through: that member
                // passes the request on to the leader, once (the leader answers itself).
                Some(l) => {
                    return match network::call(l, &Request::Join { id, member }, JOIN_FORWARD_TIMEOUT).await {
                        Ok(Reply::Joined(answer)) => answer,
                        Ok(_) => Err(NotDone::Failed(Declined::WrongReply(l))),
                        Err(error) => Err(NotDone::Failed(Declined::LeaderUnreachable { leader: l, error })),
                    };
                }
                None => return Err(NotDone::NotLeader(None)),
            }
            tracing::info!(target: "warden::cluster", node = id, name = %member.name, "a node joins as a learner");
            match raft.add_learner(id, member, false).await {
                Ok(_) => Ok(()),
                Err(e) => Err(NotDone::of_write(e)),
            }
        })
    }
}

impl Node {
    /// Starts a node hosting `singletons` (every node of a group declares the same ones).
    pub async fn start(config: NodeConfig, singletons: Vec<SingletonSpec>) -> Result<Node, ClusterError> {
        let name = config.transport.name.clone();
        let leave_timeout = config.leave_timeout;
        let storage = |cause: StorageProblem| ClusterError::Storage { name: name.clone(), cause: Box::new(cause) };
        let db = RaftDb::open(config.data_dir.as_deref()).map_err(|e| storage(StorageProblem::Open(e)))?;
        let past = db.identity().map_err(|e| storage(StorageProblem::Open(e)))?;
        // Decided before the transport and Raft start (a refused node has opened its store,
        // which stays empty: no identity is written).
        let how = entry(past.is_some(), config.found, !config.join.is_empty())
            .map_err(|refused| ClusterError::Entry { name: name.clone(), refused })?;
        let transport = Arc::new(Transport::start(config.transport.clone()).await?);
        let (identity, fresh) = match past {
            Some(identity) => (identity, false),
            None => {
                let identity = Identity { id: fresh_id(), name: name.clone(), founded: how == Entry::Found };
                db.set_identity(&identity).map_err(|e| storage(StorageProblem::Open(e)))?;
                (identity, true)
            }
        };
        let me = identity.id;
        let sm = StateMachine::open(db.clone()).map_err(|e| storage(StorageProblem::StateMachine(e)))?;
        let shared = sm.shared();
        let raft_settings = raft_config(&config.cluster_name).map_err(|e| storage(StorageProblem::Settings(e)))?;
        let seeds = transport.clone();
        let network = Network {
            connect: Arc::new(move |m: &Member| {
                if let Ok(addr) = m.addr.parse() {
                    seeds.add_seed(addr);
                }
            }),
        };
        let raft = Raft::new(me, Arc::new(raft_settings), network, LogStore::new(db.clone()), sm)
            .await
            .map_err(|e| storage(StorageProblem::Raft(e)))?;
        let appender = Appender::start(raft.clone());
        let handler: Arc<dyn Handler> =
            Arc::new(NodeHandler { me, raft: raft.clone(), shared: shared.clone(), appender: appender.clone() });
        let contact = LastContact::default();
        let (rpc, _) = Actor::spawn(None, RpcActor, (me, raft.clone(), handler, contact.clone()))
            .await
            .map_err(|error| storage(StorageProblem::Spawn { actor: "RPC actor", error }))?;
        let proposer = Proposer::start(me, raft.clone(), appender);
        let events = Events::default();
        let member = Member { name: name.clone(), addr: transport.addr().to_string() };

        let initialized = raft.is_initialized().await.map_err(|e| storage(StorageProblem::Raft(e)))?;
        if !initialized {
            if identity.founded {
                let mut nodes = BTreeMap::new();
                nodes.insert(me, member.clone());
                if let Err(e) = raft.initialize(nodes).await {
                    tracing::debug!(target: "warden::cluster", error = %e, "initialize (already done?)");
                }
                tracing::info!(target: "warden::cluster", node = me, %name, "founded a new group");
            } else {
                let within = config.join_timeout;
                join(&transport, &config.join, within, me, &member).await.map_err(|last| ClusterError::Join {
                    name: name.clone(),
                    within,
                    last: Box::new(last),
                })?;
                tracing::info!(target: "warden::cluster", node = me, %name, "joined the group as a learner");
            }
        } else if fresh {
            tracing::warn!(target: "warden::cluster", node = me, "a fresh identity found an initialized log");
        }
        for seed in &config.join {
            transport.add_seed(*seed);
        }

        let store = ReplicatedStore::new(me, shared.clone(), proposer.clone());
        let checkpoints = Checkpoints::start(store, config.checkpoints.clone())
            .await
            .map_err(|e| storage(StorageProblem::Checkpoints(e)))?;
        let reads = ReadBarrier { me, raft: raft.clone(), shared: shared.clone() };
        let directory = Directory::default();
        let pending = PendingCalls::default();
        let view = transport.view();
        let router_of: RouterOf = Arc::new(move |node: &str| crate::singleton::router_of(&view, node));
        let parts = RouterParts {
            directory: directory.clone(),
            pending: pending.clone(),
            router_of,
            watches: Watches::default(),
        };
        let (router, _) = Actor::spawn(None, Router, parts)
            .await
            .map_err(|error| storage(StorageProblem::Spawn { actor: "router", error }))?;
        let locator = Locator { me, shared: shared.clone(), view: transport.view(), directory, pending };
        let host = Host::start(HostParts {
            me,
            name: name.clone(),
            addr: member.addr.clone(),
            specs: singletons,
            shared: shared.clone(),
            proposer: proposer.clone(),
            checkpoints: checkpoints.clone(),
            reads: reads.clone(),
            locator: locator.clone(),
            events: events.clone(),
        });
        let tasks = vec![
            tokio::spawn(crate::leader::run(
                me,
                raft.clone(),
                shared.clone(),
                proposer.clone(),
                events.clone(),
                config.min_members.max(1),
            )),
            tokio::spawn(mesh(me, raft.clone(), shared.clone(), transport.clone())),
            tokio::spawn(watch_raft(me, raft.clone(), events.clone())),
            tokio::spawn(crate::raft::standing::run(me, raft.clone(), transport.view(), contact, events.clone())),
        ];
        Ok(Node {
            id: me,
            name,
            transport,
            raft,
            shared,
            proposer,
            checkpoints,
            host,
            events,
            rpc,
            router,
            db,
            reads,
            locator,
            tasks,
            leave_timeout,
        })
    }

    /// The node's id in the group (new for every empty data directory).
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address other nodes reach it at.
    pub fn addr(&self) -> SocketAddr {
        self.transport.addr()
    }

    /// The transport (peer liveness, remote watches).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The checkpoint service on the replicated store: checkpointed and durable actors
    /// started with it keep their state in the group.
    pub fn checkpoints(&self) -> &Checkpoints {
        &self.checkpoints
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    /// What the group agrees on, as this node has applied it.
    pub fn ledger<T>(&self, f: impl FnOnce(&crate::ledger::Ledger) -> T) -> T {
        self.shared.read(f)
    }

    /// The index of the last log entry this node applied.
    pub fn applied(&self) -> u64 {
        self.shared.applied()
    }

    /// Raft's view: the leader, the voters and the learners.
    pub fn membership(&self) -> Membership {
        let m = self.raft.metrics().borrow().clone();
        let config = m.membership_config.membership();
        Membership {
            leader: m.current_leader,
            voters: config.voter_ids().collect(),
            learners: config.learner_ids().collect(),
            term: m.current_term,
        }
    }

    /// The singletons running on this node.
    pub fn hosted(&self) -> Vec<String> {
        self.host.hosted()
    }

    /// The supervisor of a singleton running on this node.
    pub fn supervisor(&self, name: &str) -> Option<warden_core::SupervisorRef> {
        self.host.supervisor(name)
    }

    /// How long this node's lease still holds (zero: it serves nothing now).
    pub fn lease_left(&self) -> Duration {
        self.host.lease_left()
    }

    /// The running instance of singleton `name`, wherever the group placed it (as this node
    /// has applied the placement): on this node if it runs here, else through the router of
    /// the node holding its grant, if that node is reachable from here.
    pub fn locate<M: Message>(&self, name: &str) -> Option<SingletonRef<M>> {
        self.locator.find(name)
    }

    /// Finds singletons (a cheap handle, for tasks that outlive a borrow of the node).
    pub fn locator(&self) -> Locator {
        self.locator.clone()
    }

    /// Confirms that a read answered now would be linearizable from this node's applied
    /// state (the leader still leads, and this node has applied everything it committed).
    pub async fn read_barrier(&self) -> Result<(), crate::reads::ReadError> {
        self.reads.barrier().await.map(|_| ())
    }

    /// Makes this node's next Raft log write wait `hold` (a stalled disk, for fault tests).
    pub fn stall_disk(&self, hold: Duration) {
        let stall: &DiskStall = &self.db.stall;
        stall.stall_next(hold);
    }

    /// Submits commands to the group (for tools and tests; actors write through
    /// [`Node::checkpoints`]).
    pub async fn propose(
        &self,
        commands: Vec<Command>,
    ) -> Result<crate::proposer::Committed, crate::proposer::ProposeError> {
        self.proposer.submit(commands).await
    }

    /// Leaves the group in order: the node stops taking singletons, hands its own to other
    /// nodes (final snapshots first), is taken out of the membership, then stops. Errors if
    /// that does not happen within [`NodeConfig::leave_timeout`] (the node is then stopped
    /// anyway).
    pub async fn leave(&self) -> Result<(), ClusterError> {
        let fail = |cause: LeaveFailure| ClusterError::Leave { name: self.name.clone(), cause: Box::new(cause) };
        let deadline = Instant::now() + self.leave_timeout;
        // The leader removes a drained node from the membership once it owns nothing, then
        // commits `Forget`; the node itself may never apply those entries (the leader stops
        // replicating to it), so it asks: `Drain` is resubmitted until the group answers that
        // the node is no longer a member (`NotLive`: forgotten).
        // Any member that applied past what this node has applied now knows this node (its
        // renewals are in there), so its "forgotten" is an answer about this leave.
        let known_at = self.applied();
        let result = async {
            let mut drained = false;
            let mut attempt = 0;
            loop {
                match self.proposer.submit(vec![Command::Drain { node: self.id }]).await {
                    Ok(c)
                        if c.outcomes.first().and_then(|o| o.first())
                            == Some(&Outcome::Refused(Refusal::NotLive(self.id))) =>
                    {
                        return Ok(());
                    }
                    Ok(_) => drained = true,
                    Err(e) if Instant::now() > deadline => return Err(fail(LeaveFailure::Drain(e))),
                    // Not committed, or perhaps committed (then the group may be handing off
                    // already): ask again, and ask the members below.
                    Err(_) => {}
                }
                let m = self.membership();
                if drained && !m.voters.contains(&self.id) && !m.learners.contains(&self.id) {
                    return Ok(());
                }
                // Once removed, this node hears from no leader and its proposals may go to a
                // leader that is gone: any member can tell it whether the group forgot it.
                attempt += 1;
                let ask = Request::Forgotten { id: self.id, after: known_at };
                match network::call_any(&ask, LEAVE_POLL * 5, attempt).await {
                    Ok(Reply::Forgotten(Some(true))) => return Ok(()),
                    other => {
                        tracing::debug!(target: "warden::cluster", node = self.id, answer = ?other, "still a member")
                    }
                }
                if Instant::now() > deadline {
                    return Err(fail(LeaveFailure::StillMember {
                        within: self.leave_timeout,
                        singletons_left: self.hosted().len(),
                    }));
                }
                tokio::time::sleep(LEAVE_POLL).await;
            }
        }
        .await;
        self.stop().await;
        result
    }

    /// Stops the node (its singletons stop gracefully; for the others it is a node gone
    /// down: the group moves its singletons once its lease has run out).
    pub async fn stop(&self) {
        self.host.shutdown().await;
        let _ = self.checkpoints.close().await;
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.raft.shutdown().await;
        // The commit index goes with each append; its last advance is stored here.
        let db = self.db.clone();
        let stored = tokio::task::spawn_blocking(move || db.store_committed().map_err(|e| e.to_string()))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(error) = stored {
            tracing::warn!(target: "warden::cluster", %error, "could not store the commit index at stop");
        }
        self.rpc.stop(None);
        self.router.stop(None);
        self.transport.stop();
    }
}

/// Why an orderly leave did not finish (carried by [`ClusterError::Leave`]); the node is
/// stopped either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaveFailure {
    /// The drain could not be committed before the leave timeout ran out.
    #[error("the drain was not committed: {0}")]
    Drain(ProposeError),
    /// The group had not taken the node out within the leave timeout.
    #[error("still a member after {within:?} ({singletons_left} singletons left here)")]
    StillMember {
        /// The leave timeout ([`NodeConfig::leave_timeout`]).
        within: Duration,
        /// The singletons this node still hosted.
        singletons_left: usize,
    },
}

/// Raft's membership as a node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The leader, if one is known.
    pub leader: Option<NodeId>,
    /// The voters.
    pub voters: BTreeSet<NodeId>,
    /// The learners (not yet voting).
    pub learners: BTreeSet<NodeId>,
    /// The current term.
    pub term: u64,
}

/// What the last attempt to join the group got (carried by [`ClusterError::Join`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinAttempt {
    /// No member answered through the seeds.
    #[error("no member reachable through the seeds")]
    NoMemberReachable,
    /// The member asked does not lead and knows no leader (an election).
    #[error("node {0} is not the leader and knows none")]
    NoLeader(NodeId),
    /// The leader declined to add this node.
    #[error("the leader declined: {0}")]
    Declined(Declined),
    /// The leader's Raft failed while adding this node.
    #[error("the leader's Raft failed: {0}")]
    RaftFailed(Box<Fatal<NodeId>>),
    /// A member answered with a reply of another kind.
    #[error("a member answered with a reply of another kind")]
    WrongReply,
    /// The call to a member got no answer.
    #[error(transparent)]
    Call(CallError),
}

/// Asks members (reached through `seeds`) to add this node, until the leader has; the last
/// attempt's outcome if that does not happen `within`. A call under way when the time is up
/// is not cut short: the start fails at most [`JOIN_CALL_TIMEOUT`] later.
async fn join(
    transport: &Transport,
    seeds: &[SocketAddr],
    within: Duration,
    me: NodeId,
    member: &Member,
) -> Result<(), JoinAttempt> {
    for seed in seeds {
        transport.add_seed(*seed);
        let _ = transport.connect(*seed).await;
    }
    let deadline = Instant::now() + within;
    let request = Request::Join { id: me, member: member.clone() };
    let mut target: Option<NodeId> = None;
    let mut last = JoinAttempt::NoMemberReachable;
    let mut attempt = 0;
    while Instant::now() < deadline {
        let asked = target.take();
        let answer = match asked {
            Some(t) => network::call(t, &request, JOIN_CALL_TIMEOUT).await,
            None => {
                attempt += 1;
                network::call_any(&request, JOIN_CALL_TIMEOUT, attempt).await
            }
        };
        let ask = asked.unwrap_or(0);
        match answer {
            Ok(Reply::Joined(Ok(()))) => return Ok(()),
            Ok(Reply::Joined(Err(NotDone::NotLeader(leader)))) => {
                target = leader;
                if leader.is_none() {
                    last = JoinAttempt::NoLeader(ask);
                    tokio::time::sleep(JOIN_RETRY).await;
                }
            }
            Ok(Reply::Joined(Err(NotDone::Failed(declined)))) => {
                last = JoinAttempt::Declined(declined);
                tokio::time::sleep(JOIN_RETRY * 2).await;
            }
            // Perhaps added: asking again answers `Ok` if it was.
            Ok(Reply::Joined(Err(NotDone::Unknown(fatal)))) => {
                last = JoinAttempt::RaftFailed(fatal);
                tokio::time::sleep(JOIN_RETRY * 2).await;
            }
            Ok(Reply::Joined(Err(NotDone::NoAnswer(ms)))) => {
                last = JoinAttempt::Call(CallError::Timeout(ask, Duration::from_millis(ms)));
                tokio::time::sleep(JOIN_RETRY * 2).await;
            }
            Ok(_) => last = JoinAttempt::WrongReply,
            // A group of another wire version will not become this node's by waiting.
            Err(e @ CallError::Version { .. }) => return Err(JoinAttempt::Call(e)),
            Err(e) => {
                last = JoinAttempt::Call(e);
                tokio::time::sleep(JOIN_RETRY).await;
            }
        }
    }
    Err(last)
}

/// Keeps a session with every member.
///
/// A member's address is the one its latest renewal carries (a node restarted on another
/// port renews with its new address), else the one it joined with.
async fn mesh(me: NodeId, raft: Raft, shared: Arc<Shared>, transport: Arc<Transport>) {
    let mut known: BTreeSet<SocketAddr> = BTreeSet::new();
    loop {
        let members: Vec<Member> = {
            let m = raft.metrics().borrow().clone();
            shared.read(|l| {
                m.membership_config
                    .membership()
                    .nodes()
                    .filter(|(id, _)| **id != me)
                    .map(|(id, n)| match l.nodes.get(id) {
                        Some(rec) if !rec.addr.is_empty() => Member { name: n.name.clone(), addr: rec.addr.clone() },
                        _ => n.clone(),
                    })
                    .collect()
            })
        };
        let mut now = BTreeSet::new();
        for member in members {
            if let Ok(addr) = member.addr.parse() {
                transport.add_named_seed(addr, &member.name);
                now.insert(addr);
            }
        }
        for gone in known.difference(&now) {
            transport.remove_seed(*gone);
        }
        known = now;
        tokio::time::sleep(MESH_EVERY).await;
    }
}

/// Whether `me` should report [`ClusterEvent::Joined`] now, and whether it counts as reported
/// after this `membership`: once `me` is a voter and the change that made it one is complete
/// (no joint configuration left, so the old voters alone no longer decide); again only after
/// it stopped being a voter (removed and added back). A joint configuration that removes
/// another node reports nothing.
fn promotion(me: NodeId, membership: &openraft::Membership<NodeId, Member>, reported: bool) -> (bool, bool) {
    if !membership.voter_ids().any(|id| id == me) {
        return (false, false);
    }
    let settled = membership.get_joint_config().len() == 1;
    if settled && !reported {
        (true, true)
    } else {
        (false, reported)
    }
}

/// Reports changes of leader, and this node's promotion to voter.
async fn watch_raft(me: NodeId, raft: Raft, events: Events) {
    let mut metrics = raft.metrics();
    let mut last = None;
    // A node that starts as a voter does not report it.
    let mut reported = metrics.borrow().membership_config.membership().voter_ids().any(|id| id == me);
    loop {
        let (leader, report) = {
            let m = metrics.borrow();
            let (report, now) = promotion(me, m.membership_config.membership(), reported);
            reported = now;
            (m.current_leader, report)
        };
        if leader != last {
            if let Some(node) = leader {
                events.send(ClusterEvent::Leader { node });
            }
            last = leader;
        }
        if report {
            events.send(ClusterEvent::Joined { id: me });
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promotion_is_reported_once_its_joint_configuration_is_gone() {
        let config = |sets: &[&[NodeId]]| {
            let sets = sets.iter().map(|s| s.iter().copied().collect::<BTreeSet<NodeId>>()).collect();
            openraft::Membership::<NodeId, Member>::new(sets, None)
        };
        // Node 3 as a learner, in the joint configuration, then a voter of the new one alone.
        assert_eq!(promotion(3, &config(&[&[1, 2]]), false), (false, false));
        assert_eq!(promotion(3, &config(&[&[1, 2], &[1, 2, 3]]), false), (false, false));
        assert_eq!(promotion(3, &config(&[&[1, 2, 3]]), false), (true, true));
        assert_eq!(promotion(3, &config(&[&[1, 2, 3]]), true), (false, true));
        // Node 1 is removed later: node 3 passes through a joint configuration again, silently.
        assert_eq!(promotion(3, &config(&[&[1, 2, 3], &[2, 3]]), true), (false, true));
        assert_eq!(promotion(3, &config(&[&[2, 3]]), true), (false, true));
        // Removed, then added back: reported again.
        assert_eq!(promotion(3, &config(&[&[2]]), true), (false, false));
        assert_eq!(promotion(3, &config(&[&[2, 3]]), false), (true, true));
    }

    #[test]
    fn a_node_founds_a_group_only_when_told_and_resumes_whatever_it_is_told() {
        // No past.
        assert_eq!(entry(false, false, false), Err(EntryRefused::NothingToJoin));
        assert_eq!(entry(false, true, false), Ok(Entry::Found));
        assert_eq!(entry(false, false, true), Ok(Entry::Join));
        assert_eq!(entry(false, true, true), Err(EntryRefused::FoundAndJoin));
        // A past: it is that member again, whatever its command line says.
        for (found, joins) in [(false, false), (true, false), (false, true), (true, true)] {
            assert_eq!(entry(true, found, joins), Ok(Entry::Resume));
        }
    }
}
