//! What the leader decides, as a pure function: [`plan`] looks at the ledger, at when this
//! node (the leader) last applied each node's renewal, and at Raft's membership, and answers
//! the commands to propose and the membership changes to make. The leader's loop
//! (`leader.rs`) only carries plans out, one at a time.
//!
//! The rules, in order:
//!
//! 1. **Evict** a node none of whose renewals the leader applied for
//!    [`EVICT_AFTER`], once the leader has led for
//!    [`NEW_LEADER_WAIT`], and while a majority of the other nodes' renewals do apply on time
//!    ([`renewals_flowing`]: a congested log delays everyone's, and is no node's failure).
//!    Its singletons become unowned. (The eviction carries the renewal count it saw; a
//!    renewal applied in between voids it.)
//! 2. **Place** unowned singletons on the fresh live nodes (renewed lately, not leaving),
//!    but not before the group's first placement has [`View::min_members`] of them (Akka's
//!    `min-nr-of-members`: a cluster that starts node by node does not pile everything on the
//!    first node and then move most of it away); least loaded first, ties broken by a stable hash of (singleton, node) so that placement
//!    spreads and is the same on every run; at most [`MAX_GRANTS_PER_ROUND`] per round.
//! 3. **Give up** handoffs not released within [`HANDOFF_TIMEOUT`].
//! 4. **Rebalance** when nothing is left to place: singletons move (by handoff: the owner
//!    stops its instance, takes a final snapshot, releases) from leaving nodes and from nodes
//!    holding more than their share to nodes holding less, at most
//!    [`MAX_CONCURRENT_HANDOFFS`] at a time, and only while the spread is more than one apart.
//! 5. **Membership**: promote learners that caught up and renew (a new node counts toward no
//!    majority before); remove a leaving node once it owns nothing, and a node replaced by a
//!    newer one of the same name (a node restarted with an empty data directory joins under a
//!    new id).
//!
//! ```
//! use std::collections::{BTreeSet, HashMap};
//! use std::time::{Duration, Instant};
//! use warden_cluster::ledger::{Command, Ledger};
//! use warden_cluster::placement::{plan, View};
//!
//! let mut ledger = Ledger::default();
//! for (id, name) in [(1, "n1"), (2, "n2")] {
//!     ledger.apply(&Command::Renew { node: id, name: name.into(), addr: String::new() });
//! }
//! ledger.apply(&Command::Register { singletons: vec![("a".into(), vec![]), ("b".into(), vec![])] });
//! let now = Instant::now();
//! let renewed: HashMap<u64, Instant> = [(1, now), (2, now)].into();
//! let view = View {
//!     ledger: &ledger,
//!     now,
//!     leader_since: now - Duration::from_secs(10),
//!     renewed_at: &renewed,
//!     handoffs_since: &HashMap::new(),
//!     voters: &BTreeSet::from([1, 2]),
//!     learners: &BTreeSet::new(),
//!     caught_up: &BTreeSet::new(),
//!     min_members: 1,
//! };
//! let out = plan(&view);
//! // One singleton on each node.
//! let Command::Grant { grants } = &out.commands[0] else { unreachable!() };
//! let nodes: BTreeSet<u64> = grants.iter().map(|(_, n)| *n).collect();
//! assert_eq!(nodes, BTreeSet::from([1, 2]));
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::ledger::{Command, Ledger, NodeId, Ownership};
use crate::raft::timing::{EVICT_AFTER, NEW_LEADER_WAIT};

/// The most singletons placed in one round.
pub const MAX_GRANTS_PER_ROUND: usize = 4096;
/// The most handoffs under way at once (a bound on how much rebalancing disturbs).
pub const MAX_CONCURRENT_HANDOFFS: usize = 64;
/// A handoff not released within this is given up (the owner keeps the singleton).
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);

/// What the leader knows when it plans.
pub struct View<'a> {
    /// The ledger, as applied on the leader.
    pub ledger: &'a Ledger,
    /// Now, on the leader's clock.
    pub now: Instant,
    /// When this node became leader.
    pub leader_since: Instant,
    /// When the leader applied each node's latest renewal.
    pub renewed_at: &'a HashMap<NodeId, Instant>,
    /// When the leader first saw each handoff under way (by singleton).
    pub handoffs_since: &'a HashMap<String, Instant>,
    /// Raft's voters.
    pub voters: &'a BTreeSet<NodeId>,
    /// Raft's learners.
    pub learners: &'a BTreeSet<NodeId>,
    /// Learners whose log has caught up with the leader's.
    pub caught_up: &'a BTreeSet<NodeId>,
    /// How many fresh live nodes the group's first placement waits for (1: none). Once
    /// anything was placed, it no longer applies: a group that lost nodes goes on with those
    /// it has.
    pub min_members: usize,
}

/// What to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Commands to propose, in order (one batch).
    pub commands: Vec<Command>,
    /// Learners to make voters.
    pub promote: Vec<NodeId>,
    /// Members to take out of the group (then forget).
    pub remove: Vec<NodeId>,
}

impl Plan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.promote.is_empty() && self.remove.is_empty()
    }
}

/// A stable 64-bit hash of `parts` (XXH3 from xxhash-rust, each part followed by a 0xff
/// separator), so that ties break the same way on every node, run, platform and Rust
/// version; warden-pool's key affinity uses the same hash.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in parts {
        h.update(part);
        h.update(&[0xff]);
    }
    h.digest()
}

fn affinity(name: &str, node: NodeId) -> u64 {
    stable_hash(&[name.as_bytes(), &node.to_le_bytes()])
}

/// Whether the log applies renewals on time, so that a node whose renewals stopped is the
/// node's fault: of the `members` voters not evicted, `renewing` had a renewal applied within
/// [`EVICT_AFTER`], and those are a majority of the nodes other than a silent one. When the
/// log itself is congested (thousands of singletons starting, each start a commit), every
/// renewal is late, the leader's own included; evicting then would move the late nodes'
/// singletons onto nodes just as late and start the congestion again. Waiting is safe (an
/// eviction only ever comes later than the evicted node's lease), it only delays failover
/// while the group is overloaded.
pub fn renewals_flowing(members: usize, renewing: usize) -> bool {
    let others = members.saturating_sub(1);
    renewing * 2 > others
}

/// The leader's plan for this round (see the module documentation).
pub fn plan(v: &View<'_>) -> Plan {
    let mut out = Plan::default();
    let led_long_enough = v.now >= v.leader_since + NEW_LEADER_WAIT;
    let fresh = |n: NodeId| v.renewed_at.get(&n).is_some_and(|t| v.now < *t + EVICT_AFTER);

    // 1. Evictions, only while a majority of the other nodes' renewals apply on time (see
    // `renewals_flowing`).
    let mut evicting = BTreeSet::new();
    // Raft's voters only: a learner that died before it caught up, or the old id of a node
    // that came back empty, counts toward no majority and must not hold evictions back.
    let counted = v.ledger.nodes.iter().filter(|(id, rec)| !rec.evicted && v.voters.contains(*id));
    let (members, renewing) = counted.fold((0, 0), |(m, r), (id, _)| (m + 1, r + usize::from(fresh(*id))));
    if led_long_enough && renewals_flowing(members, renewing) {
        for (id, rec) in &v.ledger.nodes {
            if !rec.evicted && !fresh(*id) {
                out.commands.push(Command::Evict { node: *id, renewals: rec.renewals });
                evicting.insert(*id);
            }
        }
    }
    let targets: Vec<NodeId> = v
        .ledger
        .nodes
        .iter()
        .filter(|(id, rec)| rec.live() && fresh(**id) && !evicting.contains(*id))
        .map(|(id, _)| *id)
        .collect();

    // Who holds what after the evictions.
    let mut load: BTreeMap<NodeId, usize> = targets.iter().map(|n| (*n, 0)).collect();
    let mut unowned: Vec<&str> = Vec::new();
    let mut handing_off = 0usize;
    for (name, s) in &v.ledger.singletons {
        match s.ownership {
            Ownership::Unowned => unowned.push(name),
            Ownership::Owned { node, .. } if evicting.contains(&node) => unowned.push(name),
            Ownership::HandingOff { node, .. } if evicting.contains(&node) => unowned.push(name),
            Ownership::Owned { node, .. } => *load.entry(node).or_default() += 1,
            Ownership::HandingOff { to, .. } => {
                handing_off += 1;
                *load.entry(to).or_default() += 1;
            }
        }
    }

    // 2. Placement (the first one waits for `min_members` nodes).
    let enough = v.ledger.placement_started || targets.len() >= v.min_members;
    if enough && !targets.is_empty() && !unowned.is_empty() {
        let mut grants = Vec::new();
        for name in unowned.into_iter().take(MAX_GRANTS_PER_ROUND) {
            let best = targets
                .iter()
                .copied()
                .min_by_key(|n| (load.get(n).copied().unwrap_or(0), u64::MAX - affinity(name, *n)));
            if let Some(node) = best {
                *load.entry(node).or_default() += 1;
                grants.push((name.to_string(), node));
            }
        }
        out.commands.push(Command::Grant { grants });
    }

    // 3. Stuck handoffs.
    let mut cancel = Vec::new();
    for (name, s) in &v.ledger.singletons {
        if let Ownership::HandingOff { token, node, .. } = s.ownership {
            let since = v.handoffs_since.get(name).copied().unwrap_or(v.now);
            if v.now >= since + HANDOFF_TIMEOUT && !evicting.contains(&node) {
                cancel.push((name.clone(), token));
            }
        }
    }
    if !cancel.is_empty() {
        out.commands.push(Command::CancelHandoff { singletons: cancel });
    }

    // 4. Rebalancing, once everything is placed and nobody is being evicted.
    let everything_placed = !out.commands.iter().any(|c| matches!(c, Command::Grant { .. } | Command::Evict { .. }));
    if everything_placed && !targets.is_empty() && handing_off < MAX_CONCURRENT_HANDOFFS {
        out.commands.extend(rebalance(v, &targets, MAX_CONCURRENT_HANDOFFS - handing_off));
    }

    // 5. Membership.
    for id in v.learners {
        if v.caught_up.contains(id) && v.ledger.is_live(*id) && fresh(*id) {
            out.promote.push(*id);
        }
    }
    for (id, rec) in &v.ledger.nodes {
        let member = v.voters.contains(id) || v.learners.contains(id);
        if !member {
            // A node that left (drained, or replaced, then taken out of the membership) is
            // forgotten; the leader that removed it may have failed to commit that, or lost its
            // lead.
            if rec.draining || rec.evicted {
                out.commands.push(Command::Forget { node: *id });
            }
            continue;
        }
        let owns_nothing = v.ledger.owned_by(*id).next().is_none();
        let replaced = rec.evicted
            && v.ledger.nodes.iter().any(|(other, r)| *other != *id && r.name == rec.name && r.live() && fresh(*other));
        if (rec.draining && owns_nothing) || replaced {
            out.remove.push(*id);
        }
    }
    out
}

fn rebalance(v: &View<'_>, targets: &[NodeId], budget: usize) -> Vec<Command> {
    // Current owners (not counting singletons already moving).
    let mut owned: BTreeMap<NodeId, Vec<&str>> = targets.iter().map(|n| (*n, Vec::new())).collect();
    let mut leaving: BTreeMap<NodeId, Vec<&str>> = BTreeMap::new();
    let mut incoming: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (name, s) in &v.ledger.singletons {
        match s.ownership {
            Ownership::Owned { node, .. } => {
                if let Some(list) = owned.get_mut(&node) {
                    list.push(name);
                } else if v.ledger.nodes.get(&node).is_some_and(|r| r.draining && !r.evicted) {
                    leaving.entry(node).or_default().push(name);
                }
            }
            Ownership::HandingOff { to, .. } => *incoming.entry(to).or_default() += 1,
            Ownership::Unowned => {}
        }
    }
    let count = |n: &NodeId, owned: &BTreeMap<NodeId, Vec<&str>>, incoming: &BTreeMap<NodeId, usize>| {
        owned.get(n).map_or(0, Vec::len) + incoming.get(n).copied().unwrap_or(0)
    };
    let mut moves = Vec::new();
    // Leaving nodes first: everything they own goes.
    for (from, names) in leaving {
        for name in names {
            if moves.len() >= budget {
                break;
            }
            let to = *targets
                .iter()
                .min_by_key(|n| (count(n, &owned, &incoming), u64::MAX - affinity(name, **n)))
                .unwrap_or(&targets[0]);
            *incoming.entry(to).or_default() += 1;
            moves.push((name.to_string(), from, to));
        }
    }
    // Then the spread: from the fullest to the emptiest while they differ by more than one.
    while moves.len() < budget {
        let (Some(&max), Some(&min)) = (
            targets.iter().max_by_key(|n| (count(n, &owned, &incoming), **n)),
            targets.iter().min_by_key(|n| (count(n, &owned, &incoming), u64::MAX - **n)),
        ) else {
            break;
        };
        if count(&max, &owned, &incoming) <= count(&min, &owned, &incoming) + 1 {
            break;
        }
        // The singleton of the fullest node that prefers the emptiest most.
        let list = owned.get_mut(&max).map(std::mem::take).unwrap_or_default();
        let Some((pick, _)) = list.iter().enumerate().max_by_key(|(_, name)| affinity(name, min)) else { break };
        let mut list = list;
        let name = list.remove(pick);
        owned.insert(max, list);
        *incoming.entry(min).or_default() += 1;
        moves.push((name.to_string(), max, min));
    }
    if moves.is_empty() {
        Vec::new()
    } else {
        vec![Command::Handoff { moves }]
    }
}

#[cfg(test)]
mod tests;
