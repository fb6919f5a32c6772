//! The leader's rules, checked on ledgers without a cluster: each round's plan is applied to
//! the ledger as the log would apply it, and the next round plans from the result.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::*;
use crate::ledger::{Command, Ledger, NodeId, Ownership};

struct World {
    ledger: Ledger,
    renewed: HashMap<NodeId, Instant>,
    handoffs: HashMap<String, Instant>,
    voters: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    caught_up: BTreeSet<NodeId>,
    now: Instant,
    leader_since: Instant,
    min_members: usize,
}

impl World {
    fn new(nodes: u64, singletons: usize) -> World {
        let now = Instant::now();
        let mut w = World {
            ledger: Ledger::default(),
            renewed: HashMap::new(),
            handoffs: HashMap::new(),
            voters: (1..=nodes).collect(),
            learners: BTreeSet::new(),
            caught_up: BTreeSet::new(),
            now,
            leader_since: now - Duration::from_secs(60),
            min_members: 1,
        };
        for n in 1..=nodes {
            w.renew(n);
        }
        let decls = (0..singletons).map(|i| (format!("s{i}"), vec![format!("k{i}")])).collect();
        w.ledger.apply(&Command::Register { singletons: decls });
        w
    }

    fn renew(&mut self, n: NodeId) {
        self.ledger.apply(&Command::Renew { node: n, name: format!("n{n}"), addr: String::new() });
        self.renewed.insert(n, self.now);
    }

    fn plan(&self) -> Plan {
        plan(&View {
            ledger: &self.ledger,
            now: self.now,
            leader_since: self.leader_since,
            renewed_at: &self.renewed,
            handoffs_since: &self.handoffs,
            voters: &self.voters,
            learners: &self.learners,
            caught_up: &self.caught_up,
            min_members: self.min_members,
        })
    }

    /// Applies a plan's commands; owners release their handoffs at once.
    fn carry_out(&mut self, p: &Plan) {
        for c in &p.commands {
            self.ledger.apply(c);
        }
        let moving: Vec<(String, NodeId, u64)> = self
            .ledger
            .singletons
            .iter()
            .filter_map(|(n, s)| match s.ownership {
                Ownership::HandingOff { node, token, .. } => Some((n.clone(), node, token)),
                _ => None,
            })
            .collect();
        for (name, node, token) in moving {
            self.ledger.apply(&Command::Release { node, singletons: vec![(name, token)] });
        }
    }

    fn settle(&mut self, rounds: usize) -> usize {
        for round in 0..rounds {
            let p = self.plan();
            if p.commands.is_empty() {
                return round;
            }
            self.carry_out(&p);
        }
        panic!("no steady state within {rounds} rounds");
    }

    fn load(&self) -> HashMap<NodeId, usize> {
        let mut load = HashMap::new();
        for s in self.ledger.singletons.values() {
            if let Some((n, _)) = s.ownership.holder() {
                *load.entry(n).or_default() += 1;
            }
        }
        load
    }

    fn pass(&mut self, d: Duration, renewing: &[NodeId]) {
        self.now += d;
        for n in renewing {
            self.renew(*n);
        }
    }
}

#[test]
fn ten_thousand_singletons_spread_evenly_over_five_nodes() {
    let mut w = World::new(5, 10_000);
    w.settle(10);
    let load = w.load();
    assert_eq!(load.len(), 5);
    assert!(load.values().all(|n| *n == 2000), "{load:?}");
}

#[test]
fn a_node_is_evicted_only_after_its_renewals_stop_for_long_enough() {
    let mut w = World::new(3, 30);
    w.settle(5);
    // Node 3 stops renewing.
    w.pass(EVICT_AFTER - Duration::from_millis(50), &[1, 2]);
    assert!(!w.plan().commands.iter().any(|c| matches!(c, Command::Evict { .. })));
    w.pass(Duration::from_millis(100), &[1, 2]);
    let p = w.plan();
    assert!(p.commands.iter().any(|c| matches!(c, Command::Evict { node: 3, .. })), "{p:?}");
    // Its singletons are placed on the others in the same plan, evenly.
    w.carry_out(&p);
    let load = w.load();
    assert_eq!(load.get(&3), None);
    assert_eq!(load[&1] + load[&2], 30);
    assert!(load[&1].abs_diff(load[&2]) <= 1, "{load:?}");
}

#[test]
fn nobody_is_evicted_while_the_log_applies_no_majority_of_renewals() {
    // A congested log (thousands of starts committing at once): every renewal is late, the
    // leader's own included. Evicting then would only move the late nodes' singletons onto
    // nodes just as late, and start the congestion again.
    let mut w = World::new(5, 50);
    w.settle(5);
    w.pass(EVICT_AFTER + Duration::from_millis(300), &[]);
    let p = w.plan();
    assert!(!p.commands.iter().any(|c| matches!(c, Command::Evict { .. })), "{p:?}");
    // Two of five renew again: still no majority of the others for any late node.
    w.pass(Duration::from_millis(10), &[1, 2]);
    assert!(!w.plan().commands.iter().any(|c| matches!(c, Command::Evict { .. })));
    // Three renew: the two still silent are evicted.
    w.pass(Duration::from_millis(10), &[1, 2, 3]);
    let evicted: Vec<NodeId> = w
        .plan()
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Evict { node, .. } => Some(*node),
            _ => None,
        })
        .collect();
    assert_eq!(evicted, vec![4, 5]);
}

#[test]
fn dead_learners_do_not_hold_back_the_eviction_of_a_silent_voter() {
    // Three voters and two learners that died before they caught up: the two live voters are
    // a majority of the group; the silent voter is evicted.
    let mut w = World::new(5, 10);
    w.settle(5);
    w.voters = BTreeSet::from([1, 2, 3]);
    w.learners = BTreeSet::from([4, 5]);
    w.pass(EVICT_AFTER + Duration::from_millis(100), &[1, 2]);
    assert!(w.plan().commands.iter().any(|c| matches!(c, Command::Evict { node: 3, .. })), "{:?}", w.plan());
}

#[test]
fn in_a_group_of_two_the_other_node_is_evicted_when_the_leader_renews() {
    let mut w = World::new(2, 4);
    w.settle(5);
    w.pass(EVICT_AFTER + Duration::from_millis(100), &[1]);
    assert!(w.plan().commands.iter().any(|c| matches!(c, Command::Evict { node: 2, .. })));
}

#[test]
fn a_new_leader_evicts_nobody_before_it_has_led_for_the_wait() {
    let mut w = World::new(3, 3);
    w.settle(5);
    w.renewed.clear(); // a new leader knows no renewal times yet
    w.leader_since = w.now;
    w.pass(NEW_LEADER_WAIT - Duration::from_millis(10), &[]);
    assert!(!w.plan().commands.iter().any(|c| matches!(c, Command::Evict { .. })));
    w.pass(Duration::from_millis(20), &[1, 2]);
    let evicted: Vec<_> = w
        .plan()
        .commands
        .iter()
        .filter_map(|c| if let Command::Evict { node, .. } = c { Some(*node) } else { None })
        .collect();
    assert_eq!(evicted, vec![3], "only the node that did not renew since the election");
}

#[test]
fn a_node_that_joins_gets_its_share_a_bounded_number_at_a_time() {
    let mut w = World::new(3, 300);
    w.settle(5);
    w.renew(4);
    let p = w.plan();
    let moves =
        p.commands.iter().find_map(|c| if let Command::Handoff { moves } = c { Some(moves.len()) } else { None });
    assert_eq!(moves, Some(MAX_CONCURRENT_HANDOFFS));
    let rounds = w.settle(50);
    assert!(rounds > 1, "rebalancing took several rounds");
    let load = w.load();
    assert!(load.values().all(|n| *n == 75), "{load:?}");
}

#[test]
fn a_leaving_node_hands_everything_off_and_is_then_removed() {
    let mut w = World::new(3, 10);
    w.settle(5);
    w.ledger.apply(&Command::Drain { node: 2 });
    w.settle(5);
    assert_eq!(w.load().get(&2), None);
    assert_eq!(w.plan().remove, vec![2]);
    // Raft took it out, but the `Forget` that should follow was never committed (the leader
    // failed, or lost its lead): a later plan forgets it.
    w.voters.remove(&2);
    assert!(w.plan().commands.contains(&Command::Forget { node: 2 }), "{:?}", w.plan());
    w.carry_out(&w.plan());
    assert!(!w.ledger.nodes.contains_key(&2));
    assert!(!w.plan().commands.iter().any(|c| matches!(c, Command::Forget { .. })));
}

#[test]
fn a_node_replaced_by_a_new_one_of_the_same_name_is_removed() {
    let mut w = World::new(3, 3);
    w.settle(5);
    // n3's data directory is lost: it comes back as node 30, named n3.
    w.pass(EVICT_AFTER + Duration::from_millis(10), &[1, 2]);
    w.carry_out(&w.plan());
    w.ledger.apply(&Command::Renew { node: 30, name: "n3".into(), addr: String::new() });
    w.renewed.insert(30, w.now);
    w.learners.insert(30);
    assert_eq!(w.plan().remove, vec![3]);
    assert!(w.plan().promote.is_empty(), "not before it caught up");
    w.caught_up.insert(30);
    assert_eq!(w.plan().promote, vec![30]);
}

#[test]
fn stuck_handoffs_are_given_up() {
    let mut w = World::new(2, 4);
    w.settle(5);
    w.ledger.apply(&Command::Renew { node: 3, name: "n3".into(), addr: String::new() });
    w.renewed.insert(3, w.now);
    let p = w.plan();
    for c in &p.commands {
        w.ledger.apply(c);
    }
    // The owner never releases.
    for (name, s) in &w.ledger.singletons {
        if matches!(s.ownership, Ownership::HandingOff { .. }) {
            w.handoffs.insert(name.clone(), w.now);
        }
    }
    w.pass(HANDOFF_TIMEOUT + Duration::from_millis(1), &[1, 2, 3]);
    assert!(w.plan().commands.iter().any(|c| matches!(c, Command::CancelHandoff { .. })));
}

#[test]
fn the_first_placement_waits_for_min_members_then_a_smaller_group_goes_on() {
    // Two of three nodes are up: nothing is placed yet.
    let mut w = World::new(2, 300);
    w.min_members = 3;
    assert!(w.plan().commands.iter().all(|c| !matches!(c, Command::Grant { .. })));
    // The third comes: everything is placed at once, evenly, with no handoff needed.
    w.renew(3);
    w.voters.insert(3);
    let p = w.plan();
    assert!(matches!(p.commands.first(), Some(Command::Grant { grants }) if grants.len() == 300));
    w.carry_out(&p);
    assert_eq!(w.settle(10), 0, "nothing to rebalance after a placement that waited");
    assert!(w.load().values().all(|&n| n == 100), "{:?}", w.load());
    // Node 3 stops renewing and is evicted: the two left take its share, although fewer than
    // min_members, since the first placement happened.
    w.pass(Duration::from_secs(2), &[1, 2]);
    w.settle(20);
    assert_eq!(w.load().values().sum::<usize>(), 300);
    assert!(w.load().keys().all(|n| *n != 3));
}
