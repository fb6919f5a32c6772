//! Cluster singletons: actors that run on exactly one node at a time, move when their node
//! fails or the cluster rebalances, and take their state with them.
//!
//! Which node runs a singleton is decided through the Raft log (the ledger's grants, each with
//! a fencing token); see `docs/cluster.md`. This module holds what the user writes: the
//! [`SingletonSpec`] (a name, the actor, its checkpoint keys), the [`SingletonContext`] its
//! actor is built with, and [`Gated`], the wrapper through which every message reaches the
//! actor: a message that arrives while the node's lease has run out, or after the grant was
//! taken away, is dropped unanswered (its caller's call fails), so a node cut off from the
//! group stops serving within the lease bound even before the host gets to kill the instance.
//!
//! ```no_run
//! use warden_cluster::singleton::{SingletonContext, SingletonSpec};
//! use warden_checkpoint::{Checkpointed, SnapshotPolicy};
//! # #[derive(Clone)] struct Auditor;
//! # impl ractor::Actor for Auditor {
//! #     type Msg = (); type State = u64; type Arguments = ();
//! #     async fn pre_start(&self, _: ractor::ActorRef<()>, _: ()) -> Result<u64, ractor::ActorProcessingErr> { Ok(0) }
//! # }
//! # impl warden_checkpoint::Checkpoint for Auditor {
//! #     type Snapshot = u64;
//! #     fn snapshot(&self, s: &u64) -> u64 { *s }
//! #     fn restore(&self, s: &mut u64, v: u64) { *s = v }
//! # }
//! let auditor = SingletonSpec::new("auditor", |ctx: &SingletonContext| {
//!     (Checkpointed::new(Auditor, ctx.checkpoints(), "bank/auditor", SnapshotPolicy::new().every_messages(10)), ())
//! })
//! .checkpoint_key("bank/auditor");
//! // Node::start(config, vec![auditor]) hosts it wherever the group places it.
//! # let _ = auditor;
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, Message, SupervisionEvent};
use warden_checkpoint::Checkpoints;
use warden_core::ChildSpec;

use crate::ledger::NodeId;
use crate::raft::state_machine::Shared;
use crate::reads::{NotServing, ReadBarrier};
use crate::route::{Caller, Directory, PendingCalls, Routed, SingletonRef, ROUTER_GROUP};
use crate::transport::NodeView;

/// Makes the worker spec of one instance.
type Make = Arc<dyn Fn(&SingletonContext) -> ChildSpec + Send + Sync>;

/// A singleton: its name, how to make its actor, and its checkpoint keys.
#[derive(Clone)]
pub struct SingletonSpec {
    pub(crate) name: String,
    pub(crate) keys: Vec<String>,
    pub(crate) make: Make,
    pub(crate) deadline: Option<Duration>,
}

impl std::fmt::Debug for SingletonSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingletonSpec").field("name", &self.name).field("keys", &self.keys).finish()
    }
}

impl SingletonSpec {
    /// A singleton named `name` whose actor and arguments `make` builds for each instance
    /// (the context gives it the node's checkpoint service and its linearizable reads). For
    /// callers on other nodes, the actor's messages must cross nodes
    /// (`ractor_cluster::RactorClusterMessage`).
    pub fn new<A, F>(name: impl Into<String>, make: F) -> Self
    where
        A: Actor + Clone,
        A::Arguments: Clone + Sync,
        F: Fn(&SingletonContext) -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let name = name.into();
        let id = name.clone();
        let make: Make = Arc::new(move |ctx: &SingletonContext| {
            let (actor, args) = make(ctx);
            ChildSpec::worker(id.clone(), Gated { inner: actor, gate: ctx.gate.clone() }, args).into()
        });
        SingletonSpec { name, keys: Vec::new(), make, deadline: None }
    }

    /// Gives the instance a hang deadline ([`ChildSpec::deadline`]).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// A checkpoint key of the singleton's state: it belongs to the singleton, so only the
    /// node that holds the singleton's grant may write it, under the grant's token.
    pub fn checkpoint_key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    /// The singleton's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// When a node may serve: a lease deadline on a process-wide clock, published by the host.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    /// Nanoseconds after [`clock_origin`] until which the node serves (0: it does not).
    until_ns: AtomicU64,
}

fn clock_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn ns_since_origin(t: Instant) -> u64 {
    t.saturating_duration_since(clock_origin()).as_nanos() as u64
}

impl Lease {
    pub(crate) fn set_until(&self, until: Option<Instant>) {
        self.until_ns.store(until.map_or(0, ns_since_origin), Ordering::Release);
    }

    pub(crate) fn holds(&self) -> bool {
        ns_since_origin(Instant::now()) < self.until_ns.load(Ordering::Acquire)
    }

    /// How long it still holds.
    pub(crate) fn left(&self) -> Duration {
        let until = self.until_ns.load(Ordering::Acquire);
        Duration::from_nanos(until.saturating_sub(ns_since_origin(Instant::now())))
    }
}

/// What stands between one instance and its messages.
#[derive(Debug)]
pub(crate) struct Gate {
    /// The singleton.
    pub name: String,
    pub lease: Arc<Lease>,
    /// Set by the host when the instance's grant is gone (shared with the directory entry,
    /// which then no longer answers for the instance).
    pub revoked: Arc<AtomicBool>,
    /// Where the node's router finds the instance.
    pub directory: Directory,
}

impl Gate {
    pub(crate) fn open(&self) -> bool {
        !self.revoked.load(Ordering::Acquire) && self.lease.holds()
    }
}

/// What a singleton's actor is built with.
#[derive(Clone)]
pub struct SingletonContext {
    pub(crate) name: String,
    pub(crate) node: NodeId,
    pub(crate) node_name: String,
    pub(crate) token: u64,
    pub(crate) checkpoints: Checkpoints,
    pub(crate) gate: Arc<Gate>,
    pub(crate) reads: ReadBarrier,
    pub(crate) locator: Locator,
}

/// Finds the running instance of a singleton, wherever the group placed it.
#[derive(Clone)]
pub struct Locator {
    pub(crate) me: NodeId,
    pub(crate) shared: Arc<Shared>,
    pub(crate) view: NodeView,
    pub(crate) directory: Directory,
    /// This node's remote calls, for "dropped" notices (see [`crate::route`]).
    pub(crate) pending: PendingCalls,
}

impl std::fmt::Debug for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Locator")
    }
}

impl Locator {
    /// The running instance of singleton `name` (as this node has applied the placement): on
    /// this node if it runs here, else through the router of the node that holds its grant,
    /// if that node is reachable from here (see [`crate::route`]).
    pub fn find<M: Message>(&self, name: &str) -> Option<SingletonRef<M>> {
        let (owner, owner_name) = self.shared.read(|l| {
            let (owner, _) = l.singletons.get(name)?.ownership.holder()?;
            Some((owner, l.nodes.get(&owner)?.name.clone()))
        })?;
        if owner == self.me {
            return self.directory.get(name).map(|cell| SingletonRef::local(name, ActorRef::from(cell)));
        }
        let router = router_of(&self.view, &owner_name)?;
        let caller = Caller { node: self.view.name().to_string(), pending: self.pending.clone() };
        Some(SingletonRef::remote(name, router, Some(caller)))
    }
}

/// The router of the node named `node`, as this node sees it (see [`newest_router`]).
pub(crate) fn router_of(view: &NodeView, node: &str) -> Option<ActorRef<Routed>> {
    let routers = ractor::pg::get_members(&ROUTER_GROUP.to_string())
        .into_iter()
        .filter(|c| !c.get_id().is_local())
        .map(|c| (c.get_id().node(), view.node_of(&c), c));
    newest_router(routers, node).map(ActorRef::from)
}

/// Which of the routers seen (each as its session's id and its peer's name) serves node
/// `owner`: the one in the newest session to a node of that name. A node restarted under its
/// name is reached through a new session (session ids only grow on this node), and the old
/// session's router can linger in the process group until that session is seen closed; a call
/// sent to it would be lost.
fn newest_router<T>(seen: impl IntoIterator<Item = (u64, Option<String>, T)>, owner: &str) -> Option<T> {
    seen.into_iter()
        .filter(|(_, name, _)| name.as_deref() == Some(owner))
        .max_by_key(|(session, _, _)| *session)
        .map(|(_, _, router)| router)
}

impl std::fmt::Debug for SingletonContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingletonContext").field("name", &self.name).field("token", &self.token).finish()
    }
}

impl SingletonContext {
    /// The singleton's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node it runs on.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The name of the node it runs on.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The fencing token of this instance's grant (unique to it, larger than every earlier
    /// instance's).
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The node's checkpoint service (on the replicated store).
    pub fn checkpoints(&self) -> &Checkpoints {
        &self.checkpoints
    }

    /// Finds other singletons.
    pub fn locator(&self) -> &Locator {
        &self.locator
    }

    /// Whether this instance may serve now (its node's lease holds and the grant is still its
    /// own, as far as this node has applied).
    pub fn serving(&self) -> bool {
        self.gate.open()
    }

    /// Returns once an answer given now is linearizable: the group's leader confirmed it
    /// still leads, this node applied everything committed up to then, and this instance
    /// still holds its grant and its lease. Call it before answering a read that must not
    /// be stale; an ordinary read may be up to the lease bound stale (docs/cluster.md).
    pub async fn linearizable(&self) -> Result<(), NotServing> {
        self.reads.confirm(&self.name, self.token, &self.gate).await
    }
}

/// The actor wrapper every singleton instance runs in: it drops the messages that arrive
/// while the instance may not serve (see the module documentation), and is otherwise the
/// user's actor.
#[derive(Clone)]
pub struct Gated<A> {
    inner: A,
    gate: Arc<Gate>,
}

impl<A: Actor> Actor for Gated<A> {
    type Msg = A::Msg;
    type State = A::State;
    type Arguments = A::Arguments;

    async fn pre_start(&self, me: ActorRef<A::Msg>, args: A::Arguments) -> Result<A::State, ActorProcessingErr> {
        if !self.gate.open() {
            return Err("this node may not serve the singleton now (lease or grant gone)".into());
        }
        self.inner.pre_start(me, args).await
    }

    async fn post_start(&self, me: ActorRef<A::Msg>, st: &mut A::State) -> Result<(), ActorProcessingErr> {
        // Callers on this node, and the router for callers on others, find it here.
        // Not once revoked: an instance killed while it was still starting must not replace
        // the entry of the one started after it.
        self.gate.directory.insert(&self.gate.name, me.get_cell(), &self.gate.revoked);
        self.inner.post_start(me, st).await
    }

    async fn handle(&self, me: ActorRef<A::Msg>, msg: A::Msg, st: &mut A::State) -> Result<(), ActorProcessingErr> {
        if !self.gate.open() {
            // Dropped unanswered: a reply port inside it closes, and the caller learns.
            drop(msg);
            return Ok(());
        }
        self.inner.handle(me, msg, st).await
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<A::Msg>,
        evt: SupervisionEvent,
        st: &mut A::State,
    ) -> Result<(), ActorProcessingErr> {
        self.inner.handle_supervisor_evt(me, evt, st).await
    }

    async fn post_stop(&self, me: ActorRef<A::Msg>, st: &mut A::State) -> Result<(), ActorProcessingErr> {
        self.gate.directory.remove(&self.gate.name, me.get_id());
        self.inner.post_stop(me, st).await
    }
}

#[cfg(test)]
mod tests {
    use super::newest_router;

    #[test]
    fn a_call_goes_to_the_newest_session_of_the_owners_name() {
        let n = |name: &str| Some(name.to_string());
        let seen = || vec![(4, n("n2"), 'a'), (9, n("n3"), 'b'), (7, n("n2"), 'c'), (8, None, 'd')];
        assert_eq!(newest_router(seen(), "n2"), Some('c'), "session 7 replaced session 4 to n2");
        assert_eq!(newest_router(seen(), "n3"), Some('b'));
        assert_eq!(newest_router(seen(), "n5"), None, "no router of that node");
        assert_eq!(newest_router(Vec::<(u64, Option<String>, char)>::new(), "n2"), None);
    }
}
