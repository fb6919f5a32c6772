//! What the launcher knows of the cluster, as a pure state machine: [`World::apply`] takes one
//! report of one node at a time (`now`: ms since the workload started) and updates where the
//! singletons run, who leads, and each open fault's detection and recovery; [`World::settle`]
//! closes the recoveries that need a request to have succeeded since. No I/O, no clock:
//! unit-tested with made-up reports.
//!
//! When a fault counts as detected and as recovered:
//!
//! | fault | detected | recovered |
//! |---|---|---|
//! | panic, hang | the actor's crash report (kind `panic` / `hung`) | the actor restarted (or started on another node) |
//! | kill, stop, stop-at, wipe | another node reports the node down (a wiped node also when it comes back as a new member) | every singleton it hosted runs again, and a request succeeded since (wipe: the node serves again, caught up) |
//! | restart | another node reports it up | it serves again (its lease holds: caught up) |
//! | partition | a node reports one across the cut down or suspected | a request succeeded since, and every singleton of a side without a majority runs again |
//! | heal | a node reports one across the cut up again | every node serves again |
//! | slow-disk | the node took the stall | a request succeeded after the stall |
//! | join | the new node is a member | it serves (caught up, lease held) |
//! | leave | the node began handing its singletons off | it is gone and every singleton it hosted runs elsewhere |

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::demo::plan::{Action, ActorTarget, Cut};
use crate::demo::protocol::{ClusterEvent, NodeEvent, Report};
use crate::demo::report::FaultRecord;

/// How many log lines the world keeps (the oldest go).
pub const LOG_LINES: usize = 1024;
/// How long after a node came back its view of its peers may still be stale (ms).
pub const GRACE_MS: u64 = 10_000;

/// A node process's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    /// Running.
    Up,
    /// SIGKILLed (or wiped: about to start empty).
    Killed,
    /// SIGSTOPped.
    Stopped,
    /// Left the group and exited.
    Left,
}

/// One node as the launcher sees it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Its process.
    pub proc: Proc,
    /// Its id in the group (new after a wipe).
    pub id: Option<u64>,
    /// When it last came back (restart, SIGCONT, wipe, join).
    pub back_at: Option<u64>,
    /// Whether its lease holds, as it last reported.
    pub serving: bool,
}

/// A fault being followed.
#[derive(Debug, Clone)]
pub struct Open {
    /// What the report says of it.
    pub rec: FaultRecord,
    /// The fault, targets resolved.
    pub action: Action,
    /// The node it hit, if one.
    pub node: Option<String>,
    /// The actor it hit, if one.
    pub actor: Option<ActorTarget>,
    /// When it was injected (ms).
    pub injected: u64,
    /// Singletons it displaced, still to come back.
    pub displaced: BTreeSet<String>,
    /// Nodes cut off from a majority (partitions).
    pub minority: BTreeSet<String>,
    /// It displaced the demo's key singleton.
    pub key_displaced: bool,
    /// The node must serve again for it to be recovered (restart, wipe, join, heal: all).
    pub must_serve: BTreeSet<String>,
    /// Recovery needs a success after detection.
    pub needs_success: bool,
    /// Recovery needs the node gone (leave).
    pub needs_gone: bool,
}

/// What the launcher knows.
#[derive(Debug, Default)]
pub struct World {
    /// The nodes by name.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Singleton -> the nodes reporting it running, with the grant token.
    pub hosts: BTreeMap<String, BTreeMap<String, u64>>,
    /// The leader's id, as last reported.
    pub leader: Option<u64>,
    /// The current cut, if any.
    pub cut: Option<Cut>,
    /// Open and closed faults, in injection order.
    pub faults: Vec<Open>,
    /// Suspicions or downs of nodes no fault explains.
    pub false_suspicions: u64,
    /// Crash reports seen.
    pub crashes: u64,
    /// What happened, in words (bounded).
    pub log: VecDeque<String>,
}

impl World {
    /// Notes a line in the log.
    pub fn note(&mut self, line: String) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    /// The name of the node with `id`.
    pub fn name_of(&self, id: u64) -> Option<String> {
        self.nodes.iter().find(|(_, n)| n.id == Some(id)).map(|(name, _)| name.clone())
    }

    /// The singletons `node` runs.
    pub fn hosted_by(&self, node: &str) -> BTreeSet<String> {
        self.hosts.iter().filter(|(_, on)| on.contains_key(node)).map(|(s, _)| s.clone()).collect()
    }

    /// A node fault (`kind`: kill, wipe, leave) takes node `node` away at `now`: a panic or hang
    /// armed there that has not shown yet (a pool worker's next job on that node, or a
    /// singleton it hosts) can no longer show. It counts as detected by the node fault; a
    /// worker's is recovered with it (the other nodes' pools were never affected), a
    /// singleton's once the singleton starts elsewhere.
    pub fn overtaken(&mut self, node: &str, kind: &str, now: u64) {
        let hosted = self.hosted_by(node);
        for f in self.faults.iter_mut().filter(|f| f.rec.detected_at_ms.is_none()) {
            if !matches!(f.action, Action::Panic(_) | Action::Hang(_)) {
                continue;
            }
            let Some(actor) = &f.actor else { continue };
            let worker_here = matches!(actor, ActorTarget::Worker(on) if on == node);
            if worker_here || actor.singleton().is_some_and(|s| hosted.contains(s)) {
                Self::detect(f, now);
                f.rec.note = format!("overtaken by the {kind} of {node} before it showed");
                if worker_here {
                    f.rec.recovered_at_ms = Some(now);
                }
            }
        }
    }

    /// Whether `a` and `b` are on opposite sides of the current cut.
    pub fn cut_apart(&self, a: &str, b: &str) -> bool {
        match &self.cut {
            Some(Cut::Sides(x, y)) | Some(Cut::OneWay(x, y)) => {
                (x.iter().any(|n| n == a) && y.iter().any(|n| n == b))
                    || (x.iter().any(|n| n == b) && y.iter().any(|n| n == a))
            }
            None => false,
        }
    }

    fn recently_back(&self, node: &str, now: u64) -> bool {
        self.nodes.get(node).and_then(|n| n.back_at).is_some_and(|t| now < t + GRACE_MS)
    }

    fn explained(&self, reporter: &str, peer: &str, now: u64) -> bool {
        let up = |n: &str| self.nodes.get(n).is_some_and(|i| i.proc == Proc::Up);
        if !up(peer) || !up(reporter) || self.recently_back(peer, now) || self.recently_back(reporter, now) {
            return true;
        }
        if self.cut_apart(reporter, peer) {
            return true;
        }
        // A fault still open on either node (a stop being resumed, a slow disk...).
        self.faults.iter().any(|f| {
            f.rec.recovered_at_ms.is_none()
                && (f.node.as_deref() == Some(peer) || f.node.as_deref() == Some(reporter))
                && !matches!(f.action, Action::Panic(_) | Action::Hang(_))
        })
    }

    fn detect(open: &mut Open, now: u64) {
        if open.rec.detected_at_ms.is_none() {
            open.rec.detected_at_ms = Some(now);
        }
    }

    /// Takes one report of node `from` at `now` (ms).
    pub fn apply(&mut self, from: &str, report: &Report, now: u64) {
        match report {
            Report::Ready { id, .. } => {
                let fresh = {
                    let node = self.nodes.entry(from.to_string()).or_insert(NodeInfo {
                        proc: Proc::Up,
                        id: None,
                        back_at: None,
                        serving: false,
                    });
                    let fresh = node.id.is_some() && node.id != Some(*id);
                    node.id = Some(*id);
                    fresh
                };
                if fresh {
                    for f in self.faults.iter_mut().filter(|f| f.node.as_deref() == Some(from)) {
                        if matches!(f.action, Action::Wipe(_)) {
                            Self::detect(f, now);
                        }
                    }
                }
            }
            Report::Peer { node: reporter, event } => self.peer(reporter, event, now),
            Report::Cluster { node, event } => self.cluster(node, event, now),
            Report::Crash { node, actor, kind, reason } => {
                self.crashes += 1;
                for f in self.faults.iter_mut() {
                    let hit = match &f.action {
                        Action::Panic(_) => kind == "panic" && reason.contains("injected"),
                        Action::Hang(_) => kind == "hung",
                        _ => false,
                    };
                    if hit && aims_at(f.actor.as_ref(), node, actor) && f.rec.detected_at_ms.is_none() {
                        f.rec.detected_at_ms = Some(now);
                        f.rec.note = format!("crash report from {node}: {kind}");
                        break;
                    }
                }
            }
            Report::Restarted { node, actor } => {
                for f in self.faults.iter_mut() {
                    if aims_at(f.actor.as_ref(), node, actor)
                        && f.rec.detected_at_ms.is_some()
                        && f.rec.recovered_at_ms.is_none()
                    {
                        f.rec.recovered_at_ms = Some(now);
                        break;
                    }
                }
            }
            Report::Reply { .. } | Report::BadRequest { .. } => {}
        }
    }

    fn peer(&mut self, reporter: &str, event: &NodeEvent, now: u64) {
        match event {
            NodeEvent::Down { peer, .. } | NodeEvent::Suspected { peer, .. } => {
                let down = matches!(event, NodeEvent::Down { .. });
                let mut explained_by_fault = false;
                for f in self.faults.iter_mut().filter(|f| f.rec.recovered_at_ms.is_none()) {
                    let hit = match &f.action {
                        Action::Kill(_)
                        | Action::Stop(..)
                        | Action::StopAt(..)
                        | Action::Wipe(_)
                        | Action::Leave(_) => down && f.node.as_deref() == Some(peer.as_str()),
                        Action::Partition(_) => {
                            f.minority.contains(peer)
                                || f.minority.contains(reporter)
                                || {
                                    // A partial partition: the two ends lose each other.
                                    matches!(&f.action, Action::Partition(Cut::Sides(a, b)) | Action::Partition(Cut::OneWay(a, b))
                                if (a.contains(peer) && b.iter().any(|n| n == reporter)) || (b.contains(peer) && a.iter().any(|n| n == reporter)))
                                }
                        }
                        _ => false,
                    };
                    if hit {
                        Self::detect(f, now);
                        explained_by_fault = true;
                    }
                }
                if !explained_by_fault && !self.explained(reporter, peer, now) {
                    self.false_suspicions += 1;
                    self.note(format!("{now} ms: {reporter} suspected {peer}, which no fault hit"));
                }
            }
            NodeEvent::Up { peer, .. } => {
                // A stopped node's return counts even when its fault was already recovered
                // (its singletons ran elsewhere before SIGCONT).
                for f in self.faults.iter_mut() {
                    let open = f.rec.recovered_at_ms.is_none();
                    match &f.action {
                        Action::Restart(_) if open && f.node.as_deref() == Some(peer.as_str()) => Self::detect(f, now),
                        Action::Stop(..) | Action::StopAt(..)
                            if f.node.as_deref() == Some(peer.as_str()) && f.rec.detected_at_ms.is_some() =>
                        {
                            f.rec.rejoined_at_ms.get_or_insert(now);
                        }
                        Action::Heal if open => Self::detect(f, now),
                        _ => {}
                    }
                }
            }
            NodeEvent::Recovered { .. } | NodeEvent::Refused { .. } => {}
        }
    }

    fn cluster(&mut self, node: &str, event: &ClusterEvent, now: u64) {
        match event {
            ClusterEvent::Started { name, token } => {
                self.hosts.entry(name.clone()).or_default().insert(node.to_string(), *token);
                for f in self.faults.iter_mut() {
                    if f.displaced.remove(name) {
                        f.rec.moved.push(format!("{name} -> {node}"));
                    }
                    if f.actor.as_ref().and_then(ActorTarget::singleton) == Some(name.as_str())
                        && f.rec.detected_at_ms.is_some()
                        && f.rec.recovered_at_ms.is_none()
                    {
                        f.rec.recovered_at_ms = Some(now);
                    }
                }
            }
            ClusterEvent::Stopped { name, .. } | ClusterEvent::HandedOff { name } => {
                if let Some(on) = self.hosts.get_mut(name) {
                    on.remove(node);
                }
                // A panic or hang aimed at a singleton that was stopped (handed off, its grant
                // moved) before the fault showed: the stop ended the faulty instance; the
                // fault is recovered when the singleton starts again (above).
                for f in self.faults.iter_mut().filter(|f| f.rec.detected_at_ms.is_none()) {
                    if matches!(f.action, Action::Panic(_) | Action::Hang(_))
                        && f.actor.as_ref().and_then(ActorTarget::singleton) == Some(name.as_str())
                    {
                        Self::detect(f, now);
                        f.rec.note = format!("the instance on {node} was stopped (moved) before the fault showed");
                    }
                }
                if matches!(event, ClusterEvent::HandedOff { .. }) {
                    for f in self.faults.iter_mut().filter(|f| f.node.as_deref() == Some(node)) {
                        if matches!(f.action, Action::Leave(_)) {
                            Self::detect(f, now);
                        }
                    }
                }
            }
            ClusterEvent::StartFailed { .. } => {}
            ClusterEvent::Serving | ClusterEvent::NotServing => {
                let serving = matches!(event, ClusterEvent::Serving);
                if let Some(n) = self.nodes.get_mut(node) {
                    n.serving = serving;
                }
                if serving {
                    for f in self.faults.iter_mut() {
                        f.must_serve.remove(node);
                    }
                } else {
                    for f in self.faults.iter_mut().filter(|f| f.rec.recovered_at_ms.is_none()) {
                        if matches!(f.action, Action::Partition(_)) && f.minority.contains(node) {
                            Self::detect(f, now);
                        }
                    }
                }
            }
            ClusterEvent::Leader { node: id } => self.leader = Some(*id),
            ClusterEvent::Joined { .. } => {
                for f in self.faults.iter_mut().filter(|f| f.node.as_deref() == Some(node)) {
                    if matches!(f.action, Action::Join(_) | Action::Wipe(_)) {
                        Self::detect(f, now);
                    }
                }
            }
            ClusterEvent::Phase { .. } => {}
        }
    }

    /// Closes the recoveries whose conditions hold at `now`, given the time of the last
    /// successful request (ms), if any.
    pub fn settle(&mut self, now: u64, last_success: Option<u64>) {
        let gone: BTreeSet<String> =
            self.nodes.iter().filter(|(_, n)| n.proc == Proc::Left).map(|(n, _)| n.clone()).collect();
        for f in self.faults.iter_mut().filter(|f| f.rec.recovered_at_ms.is_none()) {
            let Some(detected) = f.rec.detected_at_ms else { continue };
            if !f.displaced.is_empty() || !f.must_serve.is_empty() {
                continue;
            }
            if f.needs_gone && !f.node.as_ref().is_some_and(|n| gone.contains(n)) {
                continue;
            }
            if f.needs_success && last_success.is_none_or(|t| t <= detected) {
                continue;
            }
            if matches!(f.action, Action::Panic(_) | Action::Hang(_)) {
                continue; // closed by the restart itself
            }
            f.rec.recovered_at_ms = Some(now);
        }
    }
}

/// Whether a fault aimed at `target` concerns `actor` on `node` (a pool's replicas are `r0`,
/// `r1`, ...).
fn aims_at(target: Option<&ActorTarget>, node: &str, actor: &str) -> bool {
    match target {
        Some(ActorTarget::Worker(on)) => {
            on == node && actor.starts_with('r') && actor[1..].bytes().all(|b| b.is_ascii_digit())
        }
        Some(ActorTarget::Singleton(name)) => name == actor,
        None => false,
    }
}

#[cfg(test)]
mod tests;
