//! Fault plans: which faults a demo run injects, and when.
//!
//! A plan is `chaos` (the default: a seeded random mix), `none`, or a comma-separated list of
//! `TIME:KIND[:ARGS]` entries. Times are like `5s`, `1500ms`, `2.5s` (from the start of the
//! workload). The kinds:
//!
//! | entry | what happens |
//! |---|---|
//! | `5s:panic[:ACTOR]`, `5s:hang[:ACTOR]` | a panic / a handler that never returns, in a singleton (`acct-3`, `auditor`, `results`, `register`) or a pool worker (`worker@n2`) |
//! | `5s:kill[:NODE]`, `9s:restart[:NODE]` | SIGKILL of a node process; starting it again (same data directory; default `@killed`) |
//! | `5s:stop[:NODE][:HOLD]` | SIGSTOP, SIGCONT after HOLD (default 2 s) |
//! | `5s:partition:A\|B`, `5s:partition:A>B` | packets between the nodes of side A and side B are dropped (nodes named on neither side still reach both); `A>B`: only A's packets to B. Sides are node lists joined with `+` (`n1+n2\|n3`) |
//! | `9s:heal` | every partition ends |
//! | `5s:slow-disk:NODE[:HOLD]` | the node's next Raft log write stalls for HOLD (default 1.5 s) |
//! | `5s:wipe:NODE` | the node is killed, its data directory deleted, and it is started empty: it comes back as a new member |
//! | `5s:join:NAME` | a new node NAME is started and joins the group |
//! | `5s:leave:NODE` | the node leaves the group in order (its singletons are handed off) and exits |
//! | `5s:stop-at:NODE:STEP[:HOLD]` | the node is frozen (SIGSTOP, HOLD, default 2 s) as soon as it reports protocol STEP: `leader`, `grant`, `handoff`, `evict` or `stand` (about to stand for election after its leader went down) |
//!
//! A NODE may be `@SINGLETON` (the node hosting that singleton when the fault fires), `@leader`
//! (the group's leader) or `@killed` (the node killed last). A plan under which a majority of
//! the members could be unavailable at once is refused, naming the entry ([`check_majority`]).
//! Same seed, same plan: chaos uses a seeded SplitMix64 (rand_xoshiro).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::SplitMix64;

/// A node a fault aims at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRef {
    /// This node.
    Named(String),
    /// The node hosting this singleton when the fault fires.
    Hosting(String),
    /// The node killed last.
    Killed,
    /// The group's leader.
    Leader,
}

impl NodeRef {
    fn parse(s: &str) -> NodeRef {
        match s {
            "@killed" => NodeRef::Killed,
            "@leader" => NodeRef::Leader,
            _ => match s.strip_prefix('@') {
                Some(singleton) => NodeRef::Hosting(singleton.to_string()),
                None => NodeRef::Named(s.to_string()),
            },
        }
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeRef::Named(n) => f.write_str(n),
            NodeRef::Hosting(s) => write!(f, "@{s}"),
            NodeRef::Killed => f.write_str("@killed"),
            NodeRef::Leader => f.write_str("@leader"),
        }
    }
}

/// The actor a panic or a hang aims at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorTarget {
    /// A singleton, by name (`acct-3`, `auditor`, `results`).
    Singleton(String),
    /// The pool worker on this node (`worker@n2` in a plan).
    Worker(String),
}

impl ActorTarget {
    /// A plan's word for an actor: `worker@NODE` or a singleton's name.
    pub fn parse(s: &str) -> ActorTarget {
        match s.strip_prefix("worker@") {
            Some(node) => ActorTarget::Worker(node.to_string()),
            None => ActorTarget::Singleton(s.to_string()),
        }
    }

    /// The singleton's name, if it is one.
    pub fn singleton(&self) -> Option<&str> {
        match self {
            ActorTarget::Singleton(name) => Some(name),
            ActorTarget::Worker(_) => None,
        }
    }
}

impl fmt::Display for ActorTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActorTarget::Singleton(name) => f.write_str(name),
            ActorTarget::Worker(node) => write!(f, "worker@{node}"),
        }
    }
}

/// Which packets a partition drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// Every packet between a node of one side and a node of the other.
    Sides(Vec<String>, Vec<String>),
    /// Every packet from a node of the first side to a node of the second.
    OneWay(Vec<String>, Vec<String>),
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cut::Sides(a, b) => write!(f, "{}|{}", a.join("+"), b.join("+")),
            Cut::OneWay(a, b) => write!(f, "{}>{}", a.join("+"), b.join("+")),
        }
    }
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A panic in an actor's handler.
    Panic(ActorTarget),
    /// A handler that never returns.
    Hang(ActorTarget),
    /// SIGKILL of a node.
    Kill(NodeRef),
    /// A killed node started again.
    Restart(NodeRef),
    /// SIGSTOP, then SIGCONT after the hold.
    Stop(NodeRef, Duration),
    /// Packets dropped between nodes.
    Partition(Cut),
    /// Every partition ends.
    Heal,
    /// The node's next log write stalls.
    SlowDisk(NodeRef, Duration),
    /// Killed, data directory deleted, started empty.
    Wipe(NodeRef),
    /// A new node joins.
    Join(String),
    /// A node leaves in order.
    Leave(NodeRef),
    /// Frozen at a protocol step.
    StopAt(NodeRef, String, Duration),
}

impl Action {
    /// The kind, as the report names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Panic(_) => "panic",
            Action::Hang(_) => "hang",
            Action::Kill(_) => "kill",
            Action::Restart(_) => "restart",
            Action::Stop(..) => "stop",
            Action::Partition(_) => "partition",
            Action::Heal => "heal",
            Action::SlowDisk(..) => "slow_disk",
            Action::Wipe(_) => "wipe",
            Action::Join(_) => "join",
            Action::Leave(_) => "leave",
            Action::StopAt(..) => "stop_at",
        }
    }

    /// The target, in the plan's words.
    pub fn target(&self) -> String {
        match self {
            Action::Panic(a) | Action::Hang(a) => a.to_string(),
            Action::Kill(n) | Action::Restart(n) | Action::Wipe(n) | Action::Leave(n) => n.to_string(),
            Action::Stop(n, _) | Action::SlowDisk(n, _) | Action::StopAt(n, _, _) => n.to_string(),
            Action::Partition(c) => c.to_string(),
            Action::Heal => String::new(),
            Action::Join(n) => n.clone(),
        }
    }
}

/// Every kind of fault, for coverage checks.
#[cfg(test)]
pub const KINDS: [&str; 12] =
    ["panic", "hang", "kill", "restart", "stop", "partition", "heal", "slow_disk", "wipe", "join", "leave", "stop_at"];

/// One planned fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// When, from the start of the workload.
    pub at: Duration,
    /// What.
    pub action: Action,
}

/// Why a plan was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault plan entry {index} ({entry:?}): {problem}")]
pub struct PlanError {
    /// Which entry, from 1.
    pub index: usize,
    /// The entry.
    pub entry: String,
    /// What is wrong.
    pub problem: String,
}

/// Parses `5s`, `1500ms`, `2.5s`, `1m`, `7` (seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v * scale))
}

/// What a demo offers to aim at.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The nodes the run starts with.
    pub nodes: Vec<String>,
    /// Actors a panic or hang can hit.
    pub actors: Vec<String>,
    /// The singleton node faults aim at by default (`@auditor`, `@results`).
    pub key_singleton: String,
    /// Whether packets between nodes can be dropped (network namespaces: root only).
    pub partitions: bool,
}

/// The names of the protocol steps a node reports (the cluster's `Phase`s), for messages.
fn steps() -> String {
    warden_cluster::Phase::ALL.map(|p| p.as_str()).join(", ")
}

/// Parses a plan written as a list (not `chaos` / `none`), and checks it keeps a majority.
pub fn parse_list(text: &str, targets: &Targets) -> Result<Vec<Fault>, PlanError> {
    let mut faults: Vec<(usize, String, Fault)> = Vec::new();
    let mut names: BTreeSet<String> = targets.nodes.iter().cloned().collect();
    for (i, entry) in text.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
        let err = |problem: String| PlanError { index: i + 1, entry: entry.to_string(), problem };
        let parts: Vec<&str> = entry.split(':').collect();
        if parts.len() < 2 {
            return Err(err("expected TIME:KIND[:ARGS]".into()));
        }
        let at = parse_duration(parts[0]).ok_or_else(|| err(format!("{:?} is not a time such as 5s", parts[0])))?;
        let arg = |n: usize| parts.get(n).copied();
        let hold = |n: usize, default_ms: u64| -> Result<Duration, PlanError> {
            match arg(n) {
                Some(h) => parse_duration(h).ok_or_else(|| err(format!("{h:?} is not a duration such as 2s"))),
                None => Ok(Duration::from_millis(default_ms)),
            }
        };
        let node = |n: usize, default: &str| -> Result<NodeRef, PlanError> {
            let t = arg(n).unwrap_or(default);
            let r = NodeRef::parse(t);
            match &r {
                NodeRef::Named(name) if !names.contains(name) => Err(err(format!(
                    "no node {name:?} (the nodes are {})",
                    names.iter().cloned().collect::<Vec<_>>().join(", ")
                ))),
                NodeRef::Hosting(s) if !targets.actors.contains(s) => Err(err(format!(
                    "no singleton {s:?} to find a node by (this demo has {})",
                    targets.actors.join(", ")
                ))),
                _ => Ok(r),
            }
        };
        let (action, fields) = match parts[1] {
            "panic" | "hang" => {
                let word = arg(2).map(str::to_string).unwrap_or_else(|| targets.actors[0].clone());
                let target = ActorTarget::parse(&word);
                let ok = match &target {
                    ActorTarget::Worker(node) => names.contains(node),
                    ActorTarget::Singleton(_) => targets.actors.contains(&word),
                };
                if !ok {
                    return Err(err(format!("no actor {word:?} to hit (this demo has {})", targets.actors.join(", "))));
                }
                (if parts[1] == "panic" { Action::Panic(target) } else { Action::Hang(target) }, 3)
            }
            "kill" => (Action::Kill(node(2, &format!("@{}", targets.key_singleton))?), 3),
            "restart" => (Action::Restart(node(2, "@killed")?), 3),
            "stop" => (Action::Stop(node(2, &format!("@{}", targets.key_singleton))?, hold(3, 2000)?), 4),
            "partition" => {
                if !targets.partitions {
                    return Err(err("partitions need network namespaces, which need root".into()));
                }
                let spec = arg(2).ok_or_else(|| err("partition needs sides, such as n1|n2 or n1>n2".into()))?;
                (Action::Partition(parse_cut(spec, &names).map_err(err)?), 3)
            }
            "heal" => (Action::Heal, 2),
            "slow-disk" => (Action::SlowDisk(node(2, &format!("@{}", targets.key_singleton))?, hold(3, 1500)?), 4),
            "wipe" => (Action::Wipe(node(2, &format!("@{}", targets.key_singleton))?), 3),
            "join" => {
                let name = arg(2).ok_or_else(|| err("join needs the new node's name, such as n4".into()))?;
                if names.contains(name) {
                    return Err(err(format!("a node {name:?} exists already")));
                }
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(err(format!("{name:?} is not a node name (letters, digits, -)")));
                }
                names.insert(name.to_string());
                (Action::Join(name.to_string()), 3)
            }
            "leave" => (Action::Leave(node(2, &format!("@{}", targets.key_singleton))?), 3),
            "stop-at" => {
                let n = node(2, "@leader")?;
                let step = arg(3).ok_or_else(|| err(format!("stop-at needs a step: {}", steps())))?;
                if !warden_cluster::Phase::ALL.iter().any(|p| p.as_str() == step) {
                    return Err(err(format!("{step:?} is not a step ({})", steps())));
                }
                (Action::StopAt(n, step.to_string(), hold(4, 2000)?), 5)
            }
            other => {
                return Err(err(format!(
                    "{other:?} is not a fault (panic, hang, kill, restart, stop, partition, heal, slow-disk, wipe, join, leave, stop-at)"
                )))
            }
        };
        if parts.len() > fields {
            return Err(err("too many fields".into()));
        }
        faults.push((i + 1, entry.to_string(), Fault { at, action }));
    }
    faults.sort_by_key(|(_, _, f)| f.at);
    check_majority(&targets.nodes, &faults)?;
    Ok(faults.into_iter().map(|(_, _, f)| f).collect())
}

fn parse_cut(spec: &str, names: &BTreeSet<String>) -> Result<Cut, String> {
    let (a, b, one_way) = match (spec.split_once('|'), spec.split_once('>')) {
        (Some((a, b)), None) => (a, b, false),
        (None, Some((a, b))) => (a, b, true),
        _ => return Err(format!("{spec:?} is not a cut (A|B, or A>B for one way)")),
    };
    let side = |s: &str| -> Result<Vec<String>, String> {
        let v: Vec<String> = s.split('+').map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect();
        if v.is_empty() {
            return Err(format!("an empty side in {spec:?}"));
        }
        if let Some(bad) = v.iter().find(|n| !names.contains(*n)) {
            return Err(format!("no node {bad:?} in {spec:?}"));
        }
        Ok(v)
    };
    let (a, b) = (side(a)?, side(b)?);
    if a.iter().any(|n| b.contains(n)) {
        return Err(format!("a node on both sides of {spec:?}"));
    }
    Ok(if one_way { Cut::OneWay(a, b) } else { Cut::Sides(a, b) })
}

/// How long a node counts as unavailable after a fault (down, then catching up).
fn unavailable_for(action: &Action) -> Duration {
    match action {
        Action::Stop(_, hold) | Action::StopAt(_, _, hold) => *hold + Duration::from_secs(2),
        Action::Wipe(_) => Duration::from_secs(8),
        _ => Duration::ZERO,
    }
}

/// Refuses a plan under which a majority of the members could be unavailable at once: a
/// killed node counts until restarted, a stopped or wiped one for its hold plus a margin, a
/// partition side that does not reach a majority (with the nodes on neither side) while the
/// partition lasts. Named nodes only; `@` targets count as one more node down.
pub fn check_majority(initial: &[String], faults: &[(usize, String, Fault)]) -> Result<(), PlanError> {
    let mut members: BTreeSet<String> = initial.iter().cloned().collect();
    // Killed and not restarted yet, oldest first; a node named by role shows as its entry.
    let mut killed: Vec<String> = Vec::new();
    let mut until: Vec<(String, Duration)> = Vec::new();
    let mut cut: Option<Cut> = None;
    for (index, entry, f) in faults {
        until.retain(|(_, t)| *t > f.at);
        let name = |r: &NodeRef| match r {
            NodeRef::Named(n) => n.clone(),
            _ => format!("({entry})"),
        };
        match &f.action {
            Action::Kill(r) => killed.push(name(r)),
            Action::Restart(NodeRef::Named(n)) => killed.retain(|k| k != n),
            // `@killed` and the other roles restart the node killed last.
            Action::Restart(_) => {
                killed.pop();
            }
            Action::Stop(r, _) | Action::StopAt(r, _, _) | Action::Wipe(r) => {
                until.push((name(r), f.at + unavailable_for(&f.action)))
            }
            Action::Partition(c) => cut = Some(c.clone()),
            Action::Heal => cut = None,
            Action::Join(n) => {
                members.insert(n.clone());
            }
            Action::Leave(r) => {
                members.remove(&name(r));
            }
            Action::Panic(_) | Action::Hang(_) | Action::SlowDisk(..) => {}
        }
        let mut out: BTreeSet<String> = killed.iter().cloned().collect();
        out.extend(until.iter().map(|(n, _)| n.clone()));
        if let Some(c) = &cut {
            let (a, b) = match c {
                Cut::Sides(a, b) | Cut::OneWay(a, b) => (a, b),
            };
            // Members on neither side that are up: both sides reach them.
            let others = members.iter().filter(|m| !a.contains(m) && !b.contains(m) && !out.contains(*m)).count();
            let majority = members.len() / 2 + 1;
            let mut cut_off = Vec::new();
            for side in [a, b] {
                let up = side.iter().filter(|m| members.contains(*m) && !out.contains(*m)).count();
                if up + others < majority {
                    cut_off.extend(side.iter().cloned());
                }
            }
            out.extend(cut_off);
        }
        let unavailable = out.iter().filter(|n| members.contains(*n) || n.starts_with('(')).count();
        let majority = members.len() / 2 + 1;
        if members.len().saturating_sub(unavailable) < majority {
            return Err(PlanError {
                index: *index,
                entry: entry.clone(),
                problem: format!(
                    "at {:?}, {unavailable} of {} members could be unavailable ({}): a majority ({majority}) must stay up",
                    f.at,
                    members.len(),
                    out.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// A seeded random mix over a run of `duration` on `targets.nodes`: faults start after 3 s
/// and stop 10 s before the end (the run then checks its invariants on a quiet cluster). Node
/// faults never overlap (one node unavailable at a time, so a majority always survives), each
/// one followed by time to recover; panics and hangs fill the time in between. The first node
/// faults are, in a seeded order, one of each kind the run has room for: kill (then restart),
/// stop, partition (then heal), slow disk, wipe, stop at a protocol step, and a join followed
/// later by a leave; then random ones. Partitions only when `targets.partitions`.
pub fn chaos(seed: u64, duration: Duration, targets: &Targets) -> Vec<Fault> {
    let mut rng = Rng(SplitMix64::seed_from_u64(seed));
    let end = duration.saturating_sub(Duration::from_secs(10));
    let mut t = Duration::from_secs(3);
    let mut node_free_at = Duration::ZERO;
    let mut nodes = targets.nodes.clone();
    let key = format!("@{}", targets.key_singleton);
    let mut must: Vec<&str> = vec!["kill", "stop", "slow_disk", "wipe", "stop_at", "join"];
    if targets.partitions {
        must.push("partition");
    }
    rng.shuffle(&mut must);
    let mut joined: Option<String> = None;
    let mut left = false;
    let mut first = true;
    let mut faults = Vec::new();
    while t < end {
        let node_turn = t >= node_free_at;
        let kind: &'static str = if node_turn && !must.is_empty() {
            must.remove(0)
        } else if node_turn && joined.is_some() && !left {
            "leave"
        } else if node_turn && rng.below(3) == 0 {
            rng.pick_str(&["kill", "stop", "slow_disk", "partition", "wipe", "stop_at"])
        } else {
            rng.pick_str(&["panic", "panic", "hang"])
        };
        let kind = if kind == "partition" && !targets.partitions { "stop" } else { kind };
        let pick_node = |rng: &mut Rng, first: bool| -> NodeRef {
            if first {
                NodeRef::parse(&key)
            } else {
                NodeRef::Named(rng.pick(&nodes).clone())
            }
        };
        // A node fault must end, with time to recover, before the quiet end of the run.
        if let Some(need) = longest_busy(kind) {
            if t + need > end {
                t += Duration::from_secs(1);
                continue;
            }
        }
        let mut busy = Duration::ZERO;
        match kind {
            "panic" | "hang" => {
                let actor = ActorTarget::parse(rng.pick::<String>(&targets.actors));
                faults.push(Fault {
                    at: t,
                    action: if kind == "panic" { Action::Panic(actor) } else { Action::Hang(actor) },
                });
            }
            "kill" => {
                let restart_at = t + Duration::from_secs(4);
                faults.push(Fault { at: t, action: Action::Kill(pick_node(&mut rng, first)) });
                faults.push(Fault { at: restart_at, action: Action::Restart(NodeRef::Killed) });
                busy = Duration::from_secs(7);
            }
            "stop" => {
                let hold = Duration::from_millis(1500 + rng.below(1500));
                faults.push(Fault { at: t, action: Action::Stop(pick_node(&mut rng, first), hold) });
                busy = hold + Duration::from_secs(4);
            }
            "partition" => {
                let a = rng.pick(&nodes).clone();
                let rest: Vec<String> = nodes.iter().filter(|n| **n != a).cloned().collect();
                let cut = match rng.below(3) {
                    // n|rest: the node is cut off from everyone.
                    0 => Cut::Sides(vec![a], rest),
                    // n|m: a partial partition, both still reach the others.
                    1 => Cut::Sides(vec![a], vec![rng.pick(&rest).clone()]),
                    _ => Cut::OneWay(vec![a], vec![rng.pick(&rest).clone()]),
                };
                let hold = Duration::from_millis(2000 + rng.below(2000));
                faults.push(Fault { at: t, action: Action::Partition(cut) });
                faults.push(Fault { at: t + hold, action: Action::Heal });
                busy = hold + Duration::from_secs(4);
            }
            "slow_disk" => {
                let hold = Duration::from_millis(1000 + rng.below(1000));
                faults.push(Fault { at: t, action: Action::SlowDisk(pick_node(&mut rng, first), hold) });
                busy = hold + Duration::from_secs(2);
            }
            "wipe" => {
                faults.push(Fault { at: t, action: Action::Wipe(pick_node(&mut rng, first)) });
                busy = Duration::from_secs(9);
            }
            "stop_at" => {
                let step = *rng.pick(&["leader", "grant", "handoff"]);
                let hold = Duration::from_millis(1500 + rng.below(1000));
                let node = if step == "leader" { NodeRef::Leader } else { pick_node(&mut rng, false) };
                faults.push(Fault { at: t, action: Action::StopAt(node, step.to_string(), hold) });
                busy = hold + Duration::from_secs(5);
            }
            "join" => {
                let name = format!("n{}", targets.nodes.len() + 1);
                nodes.push(name.clone());
                faults.push(Fault { at: t, action: Action::Join(name.clone()) });
                joined = Some(name);
                busy = Duration::from_secs(6);
            }
            "leave" => {
                // Not the node that just joined, so that both moves are seen.
                let candidates: Vec<String> = nodes.iter().filter(|n| Some(*n) != joined.as_ref()).cloned().collect();
                let gone = rng.pick(&candidates).clone();
                nodes.retain(|n| *n != gone);
                faults.push(Fault { at: t, action: Action::Leave(NodeRef::Named(gone)) });
                left = true;
                busy = Duration::from_secs(6);
            }
            _ => {}
        }
        if busy > Duration::ZERO {
            node_free_at = t + busy;
            first = false;
        }
        t += Duration::from_millis(1500 + rng.below(2000));
    }
    faults.sort_by_key(|f| f.at);
    faults
}

/// The longest a node fault of `kind` keeps the cluster busy in [`chaos`] (its hold, then time
/// to recover); `None` for actor faults.
fn longest_busy(kind: &str) -> Option<Duration> {
    let ms = match kind {
        "kill" => 7_000,
        "stop" => 3_000 + 4_000,
        "partition" => 4_000 + 4_000,
        "slow_disk" => 2_000 + 2_000,
        "wipe" => 9_000,
        "stop_at" => 2_500 + 5_000,
        "join" | "leave" => 6_000,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

struct Rng(SplitMix64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn pick_str(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len() as u64) as usize]
    }
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests;
