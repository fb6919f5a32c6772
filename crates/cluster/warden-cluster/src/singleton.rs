//! Cluster singletons: actors that run on exactly one node of the cluster at a time.
//!
//! Every node runs the same [`Singletons`] host with the same declarations. The host checks,
//! every `check_interval` and whenever a node event arrives, where each singleton runs (its
//! actor is a member of the process group `warden.singleton.<name>`, which ractor_cluster
//! synchronises across nodes):
//!
//! * **Majority rule.** A node that sees fewer than a majority of `cluster_size` nodes (itself
//!   included) stops the singletons it hosts and starts none: on a network split only the
//!   majority side keeps them; the minority side runs everything else and takes part again
//!   when it rejoins.
//! * **Sticky placement.** A singleton stays where it runs while that node is live. When no
//!   live node hosts it, the owner is chosen deterministically among the live nodes (highest
//!   rendezvous hash of singleton name and node name), so every node that sees the same
//!   members picks the same one. Before starting it, the owner asks every live peer where it
//!   sees the singleton (each node runs a placement actor in [`PLACEMENT_GROUP`]) and starts
//!   only if all answer "nowhere": sessions are not transitive, and a node that just rejoined
//!   may not yet see the host that its peers see. It also waits until its own view of the
//!   members has been unchanged for [`SingletonConfig::settle`].
//! * **Duplicates resolve.** Should two nodes host one singleton (views that briefly differ),
//!   the one with the lower rank stops its own.
//! * **State.** Before starting, the owner catches up the singleton's checkpoint keys from the
//!   replicas of the live nodes ([`Replication::catch_up`]); the actor itself (usually
//!   `warden_checkpoint::Checkpointed`) then restores on start.
//!
//! The actor runs under a one-for-one warden supervisor of its own on the hosting node: crashes
//! restart it there; the host keeps its current incarnation in the group.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, Message, RpcReplyPort};
use tokio::sync::broadcast;
use warden_core::{ChildSpec, Supervisor, SupervisorRef, SupervisorSpec, WorkerSpec};

use crate::node::NodeView;
use crate::replication::Replication;

/// The process group of every node's placement actor, which tells other nodes where it sees
/// a singleton running.
pub const PLACEMENT_GROUP: &str = "warden.singleton.placement";

/// The placement actor's message (it crosses nodes).
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum PlacementMsg {
    /// The nodes this node sees hosting the named singleton (comma-separated, live ones only).
    #[rpc]
    Hosts(String, RpcReplyPort<String>),
}

/// Answers other nodes' questions about where singletons run, from this node's view.
struct Placement {
    view: NodeView,
    /// What this node's host runs, even while an instance is between incarnations (a restart
    /// leaves the group until the new incarnation joins).
    hosting: Hosting,
}

/// The names of the singletons a host runs.
type Hosting = Arc<Mutex<std::collections::BTreeSet<String>>>;

/// The live nodes `view` sees hosting `name` (itself included).
fn hosts_seen(view: &NodeView, name: &str) -> Vec<String> {
    let live = view.live_peers();
    let me = view.name();
    let mut hosts: Vec<String> = ractor::pg::get_members(&group_of(name))
        .iter()
        .filter_map(|c| view.node_of(c))
        .filter(|n| n == me || live.contains(n))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

impl Actor for Placement {
    type Msg = PlacementMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<PlacementMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        ractor::pg::join(PLACEMENT_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(())
    }

    async fn handle(&self, _: ActorRef<PlacementMsg>, msg: PlacementMsg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        match msg {
            PlacementMsg::Hosts(name, reply) => {
                let mut hosts = hosts_seen(&self.view, &name);
                let me = self.view.name().to_string();
                if !hosts.contains(&me) && self.hosting.lock().unwrap_or_else(PoisonError::into_inner).contains(&name) {
                    hosts.push(me);
                }
                let _ = reply.send(hosts.join(","));
            }
        }
        Ok(())
    }
}

/// The restart intensity of the one-for-one supervisor each singleton runs under here:
/// restarts allowed within the period.
pub const SUPERVISOR_INTENSITY: (u32, Duration) = (50, Duration::from_secs(10));

/// The process group of a singleton's actor.
pub fn group_of(name: &str) -> String {
    format!("warden.singleton.{name}")
}

type Make = Arc<dyn Fn() -> (ChildSpec, CellOf) + Send + Sync>;
type CellOf = Box<dyn Fn() -> Option<ActorCell> + Send + Sync>;

/// A singleton declaration: its name, how to build its child spec, and the checkpoint keys
/// its state lives under.
#[derive(Clone)]
pub struct SingletonSpec {
    name: String,
    keys: Vec<String>,
    make: Make,
}

impl std::fmt::Debug for SingletonSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingletonSpec").field("name", &self.name).field("keys", &self.keys).finish()
    }
}

impl SingletonSpec {
    /// A singleton named `name` whose actor takes messages `M`; `make` builds a fresh child
    /// spec each time the singleton starts on this node. For callers on other nodes, `M` must
    /// be serialisable (`ractor_cluster::RactorClusterMessage`).
    pub fn new<M: Message>(name: impl Into<String>, make: impl Fn() -> WorkerSpec<M> + Send + Sync + 'static) -> Self {
        let make: Make = Arc::new(move || {
            let (spec, handle) = make().into_parts();
            let cell: CellOf = Box::new(move || handle.actor_ref().map(|r| r.get_cell()));
            (spec, cell)
        });
        SingletonSpec { name: name.into(), keys: Vec::new(), make }
    }

    /// A checkpoint key of the singleton's state, caught up from the replicas before it starts.
    pub fn checkpoint_key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    /// The singleton's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What the host did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SingletonEvent {
    /// The singleton started on this node (`caught_up_to`: the highest sequence number of its
    /// checkpoint keys after catching up).
    Started {
        /// The singleton.
        name: String,
        /// This node.
        node: String,
        /// Highest checkpoint sequence number after catch-up (0 without keys).
        caught_up_to: u64,
    },
    /// The singleton stopped on this node.
    Stopped {
        /// The singleton.
        name: String,
        /// This node.
        node: String,
        /// Why: `minority`, `duplicate on <node>`, `host stopped`.
        why: String,
    },
    /// Starting failed (it is tried again on the next check).
    StartFailed {
        /// The singleton.
        name: String,
        /// Why.
        error: String,
    },
}

/// Settings of a node's singleton host.
#[derive(Debug, Clone, Copy)]
pub struct SingletonConfig {
    /// The number of nodes the cluster is meant to have (the majority is of this number).
    pub cluster_size: usize,
    /// How often placement is checked (also after every node event).
    pub check_interval: Duration,
    /// How long this node's view of the live members must stay unchanged before it starts a
    /// singleton. Views that change together (nodes starting, a peer lost) settle first, which
    /// keeps two nodes with different views from both starting one.
    pub settle: Duration,
}

impl SingletonConfig {
    /// Checks every 100 ms.
    pub fn new(cluster_size: usize) -> Self {
        SingletonConfig {
            cluster_size: cluster_size.max(1),
            check_interval: Duration::from_millis(100),
            settle: Duration::from_millis(300),
        }
    }
}

struct Running {
    supervisor: SupervisorRef,
    cell: CellOf,
}

struct Inner {
    view: NodeView,
    config: SingletonConfig,
    replication: Option<Arc<Replication>>,
    specs: Vec<SingletonSpec>,
    running: tokio::sync::Mutex<HashMap<String, Running>>,
    events: broadcast::Sender<SingletonEvent>,
    failures: Mutex<HashMap<String, Instant>>,
    /// The live members last seen, and since when.
    members: Mutex<(Vec<String>, Instant)>,
    /// The names in `running`, for the placement actor.
    hosting: Hosting,
}

/// A node's singleton host.
pub struct Singletons {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
    placement: Option<ActorRef<PlacementMsg>>,
}

impl std::fmt::Debug for Singletons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Singletons").field("node", &self.inner.view.name()).finish()
    }
}

/// Rendezvous rank of `node` for singleton `name`. FNV-1a, written out because every node
/// must compute the same number whatever its build (std's hasher may change between
/// releases).
pub fn rank(name: &str, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain([0u8]).chain(node.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short inputs; a final avalanche (splitmix64's) fixes that.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The node among `live` that should host `name` when nobody does.
pub fn owner<'a>(name: &str, live: &'a [String]) -> Option<&'a String> {
    live.iter().max_by_key(|n| (rank(name, n), n.as_str()))
}

impl Singletons {
    /// Starts the host for `specs` on the node seen through `view`. `replication` (if any)
    /// catches up each singleton's checkpoint keys before it starts.
    pub async fn start(
        view: NodeView,
        config: SingletonConfig,
        replication: Option<Arc<Replication>>,
        specs: Vec<SingletonSpec>,
    ) -> Result<Singletons, crate::ClusterError> {
        let hosting: Hosting = Arc::default();
        let (placement, _) = Actor::spawn(None, Placement { view: view.clone(), hosting: hosting.clone() }, ())
            .await
            .map_err(|e| crate::ClusterError::Start {
            name: view.name().to_string(),
            addr: ([127, 0, 0, 1], 0).into(),
            cause: format!("singleton placement actor: {e}"),
        })?;
        let (events, _) = broadcast::channel(256);
        let inner = Arc::new(Inner {
            view,
            config,
            replication,
            specs,
            running: tokio::sync::Mutex::new(HashMap::new()),
            events,
            failures: Mutex::new(HashMap::new()),
            members: Mutex::new((Vec::new(), Instant::now())),
            hosting,
        });
        let task = tokio::spawn(host(inner.clone()));
        Ok(Singletons { inner, task, placement: Some(placement) })
    }

    /// The host's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SingletonEvent> {
        self.inner.events.subscribe()
    }

    /// The singletons running on this node.
    pub async fn hosted(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.running.lock().await.keys().cloned().collect();
        names.sort();
        names
    }

    /// Every singleton hosted here with its supervisor.
    pub async fn supervisors(&self) -> Vec<(String, SupervisorRef)> {
        let mut all: Vec<(String, SupervisorRef)> =
            self.inner.running.lock().await.iter().map(|(n, r)| (n.clone(), r.supervisor.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The checkpoint keys of a declared singleton.
    pub fn checkpoint_keys(&self, name: &str) -> Vec<String> {
        self.inner.specs.iter().find(|s| s.name == name).map(|s| s.keys.clone()).unwrap_or_default()
    }

    /// The supervisor of a singleton hosted here (crash reports, stats).
    pub async fn supervisor(&self, name: &str) -> Option<SupervisorRef> {
        self.inner.running.lock().await.get(name).map(|r| r.supervisor.clone())
    }

    /// Stops the host and every singleton it runs (gracefully: checkpointed actors snapshot).
    pub async fn shutdown(&self) {
        self.task.abort();
        let mut running = self.inner.running.lock().await;
        self.inner.hosting.lock().unwrap_or_else(PoisonError::into_inner).clear();
        for (name, r) in running.drain() {
            r.supervisor.shutdown().await;
            self.inner.emit(SingletonEvent::Stopped {
                name,
                node: self.inner.view.name().to_string(),
                why: "host stopped".into(),
            });
        }
    }
}

impl Drop for Singletons {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(p) = self.placement.take() {
            p.stop(None);
        }
    }
}

/// Finds a singleton's actor, wherever it runs (`None` while it moves).
pub fn locate<M: Message>(name: &str) -> Option<ActorRef<M>> {
    ractor::pg::get_members(&group_of(name)).into_iter().next().map(ActorRef::<M>::from)
}

impl Inner {
    fn emit(&self, event: SingletonEvent) {
        match &event {
            SingletonEvent::Started { name, node, caught_up_to } => {
                tracing::info!(target: "warden::cluster", singleton = %name, node = %node, seq = caught_up_to, "singleton started")
            }
            SingletonEvent::Stopped { name, node, why } => {
                tracing::warn!(target: "warden::cluster", singleton = %name, node = %node, why = %why, "singleton stopped")
            }
            SingletonEvent::StartFailed { name, error } => {
                tracing::warn!(target: "warden::cluster", singleton = %name, error = %error, "singleton start failed")
            }
        }
        let _ = self.events.send(event);
    }

    /// One placement check of every singleton; then tells the placement actor what runs here.
    async fn check(&self) {
        self.place().await;
        let names = self.running.lock().await.keys().cloned().collect();
        *self.hosting.lock().unwrap_or_else(PoisonError::into_inner) = names;
    }

    async fn place(&self) {
        let me = self.view.name().to_string();
        let mut live = self.view.live_peers();
        live.push(me.clone());
        live.sort();
        let majority = live.len() * 2 > self.config.cluster_size;
        let settled = {
            let mut v = self.members.lock().unwrap_or_else(PoisonError::into_inner);
            if v.0 != live {
                *v = (live.clone(), Instant::now());
            }
            v.1.elapsed() >= self.config.settle
        };
        let mut running = self.running.lock().await;
        if !majority && !running.is_empty() {
            // Fence first, all at once and without awaiting anything: leave the groups (so no
            // peer that reconnects takes a stale instance for the host), then kill (no
            // graceful stop, whose final snapshot would come from the stale side).
            let fenced: Vec<(String, Running)> = running.drain().collect();
            for (name, r) in &fenced {
                if let Some(cell) = (r.cell)() {
                    ractor::pg::leave(group_of(name), vec![cell]);
                }
                if let Some(sup) = r.supervisor.cell() {
                    let children = sup.get_children();
                    sup.kill();
                    for child in children {
                        child.kill();
                    }
                }
            }
            for (name, _) in fenced {
                self.emit(SingletonEvent::Stopped { name, node: me.clone(), why: "minority".into() });
            }
            return;
        }
        for spec in &self.specs {
            let name = spec.name.as_str();
            let group = group_of(name);
            let others: Vec<String> = ractor::pg::get_members(&group)
                .iter()
                .filter(|c| !c.get_id().is_local())
                .filter_map(|c| self.view.node_of(c))
                .filter(|n| live.contains(n))
                .collect();
            if running.get(name).is_some_and(|r| !r.supervisor.is_running()) {
                running.remove(name);
                self.emit(SingletonEvent::Stopped {
                    name: name.to_string(),
                    node: me.clone(),
                    why: "its supervisor gave up (restart intensity)".into(),
                });
            }
            if let Some(r) = running.get(name) {
                // (A minority node has fenced everything above.)
                let why = others.iter().find(|n| rank(name, n) > rank(name, &me)).map(|n| format!("duplicate on {n}"));
                match why {
                    Some(why) => {
                        if let Some(r) = running.remove(name) {
                            r.supervisor.shutdown().await;
                        }
                        self.emit(SingletonEvent::Stopped { name: name.to_string(), node: me.clone(), why });
                    }
                    None => {
                        // Keep the current incarnation (after a restart) in the group.
                        if let Some(cell) = (r.cell)() {
                            let members = ractor::pg::get_members(&group);
                            if !members.iter().any(|m| m.get_id() == cell.get_id()) {
                                ractor::pg::join(group.clone(), vec![cell]);
                            }
                        }
                    }
                }
                continue;
            }
            if !majority || !settled || !others.is_empty() || owner(name, &live) != Some(&me) {
                continue;
            }
            if let Some(at) = self.failures.lock().unwrap_or_else(PoisonError::into_inner).get(name) {
                if at.elapsed() < Duration::from_millis(500) {
                    continue; // a failed start waits a little before the next attempt
                }
            }
            // Views are not transitive: a node that just (re)joined may not have a session with
            // the host yet. Every live peer must confirm that it sees no live host either.
            if let Err(why) = self.nobody_hosts(name, &live).await {
                tracing::debug!(target: "warden::cluster", singleton = %name, why = %why, "not starting");
                continue;
            }
            match self.start_one(spec).await {
                Ok((r, caught_up_to)) => {
                    running.insert(name.to_string(), r);
                    self.failures.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
                    self.emit(SingletonEvent::Started { name: name.to_string(), node: me.clone(), caught_up_to });
                }
                Err(error) => {
                    self.failures
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(name.to_string(), Instant::now());
                    self.emit(SingletonEvent::StartFailed { name: name.to_string(), error });
                }
            }
        }
    }

    /// Asks every live peer's placement actor where it sees `name`; `Ok` only if all answered
    /// and none sees a host.
    async fn nobody_hosts(&self, name: &str, live: &[String]) -> Result<(), String> {
        let me = self.view.name();
        let mut asked = Vec::new();
        let mut calls = tokio::task::JoinSet::new();
        for cell in ractor::pg::get_members(&PLACEMENT_GROUP.to_string()) {
            let Some(node) = self.view.node_of(&cell) else { continue };
            if node == me || !live.contains(&node) {
                continue;
            }
            asked.push(node.clone());
            let (actor, name) = (ActorRef::<PlacementMsg>::from(cell), name.to_string());
            calls.spawn(async move {
                (node, actor.call(|port| PlacementMsg::Hosts(name, port), Some(Duration::from_millis(500))).await)
            });
        }
        if let Some(missing) = live.iter().find(|n| *n != me && !asked.contains(n)) {
            return Err(format!("no placement actor of {missing} known yet"));
        }
        while let Some(done) = calls.join_next().await {
            match done {
                Ok((_, Ok(ractor::rpc::CallResult::Success(hosts)))) if hosts.is_empty() => {}
                Ok((node, Ok(ractor::rpc::CallResult::Success(hosts)))) => {
                    return Err(format!("{node} sees it on {hosts}"));
                }
                Ok((node, _)) => return Err(format!("{node} did not answer")),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    async fn start_one(&self, spec: &SingletonSpec) -> Result<(Running, u64), String> {
        let mut caught_up_to = 0;
        if let Some(replication) = &self.replication {
            for key in &spec.keys {
                caught_up_to =
                    caught_up_to.max(replication.catch_up(key, &self.view).await.map_err(|e| e.to_string())?);
            }
        }
        let (child, cell) = (spec.make)();
        let supervisor = Supervisor::start(
            &format!("singleton-{}", spec.name),
            SupervisorSpec::one_for_one().intensity(SUPERVISOR_INTENSITY.0, SUPERVISOR_INTENSITY.1).child(child),
        )
        .await
        .map_err(|e| e.to_string())?;
        match cell() {
            Some(c) => ractor::pg::join(group_of(&spec.name), vec![c]),
            None => {
                supervisor.shutdown().await;
                return Err("the singleton's actor did not start".into());
            }
        }
        Ok((Running { supervisor, cell }, caught_up_to))
    }
}

async fn host(inner: Arc<Inner>) {
    let mut events = inner.view.subscribe();
    let mut tick = tokio::time::interval(inner.config.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            e = events.recv() => {
                if matches!(e, Err(broadcast::error::RecvError::Closed)) {
                    return;
                }
            }
        }
        inner.check().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_deterministic_and_spreads() {
        let live: Vec<String> = ["n1", "n2", "n3"].iter().map(|s| s.to_string()).collect();
        let mut per_node = HashMap::new();
        for i in 0..300 {
            let name = format!("acct/{i}");
            let o = owner(&name, &live).unwrap().clone();
            assert_eq!(owner(&name, &live), Some(&o), "same members, same owner");
            *per_node.entry(o).or_insert(0) += 1;
        }
        assert_eq!(per_node.len(), 3);
        assert!(per_node.values().all(|&n| n > 60), "roughly even: {per_node:?}");
        // Losing a node moves only its own singletons.
        let two: Vec<String> = live.iter().filter(|n| *n != "n2").cloned().collect();
        for i in 0..300 {
            let name = format!("acct/{i}");
            let before = owner(&name, &live).unwrap();
            if before != "n2" {
                assert_eq!(owner(&name, &two), Some(before));
            }
        }
        assert_eq!(owner("x", &[]), None);
    }
}
