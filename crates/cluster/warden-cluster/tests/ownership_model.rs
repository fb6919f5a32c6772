//! A model of warden's ownership protocol, checked exhaustively with stateright for three
//! nodes and one singleton: leases renewed through the log, evictions by the leader after
//! `EVICT_AFTER` (and `NEW_LEADER_WAIT` after an election), grants, hosts and leaders that lag
//! behind the log, lost renewals, a node cut off from the others (then healed), and a change of
//! leader.
//!
//! The property: at no moment do two nodes run an instance of the singleton whose gate is open
//! (its node's published lease holds). The model abstracts Raft as one log that only the
//! current leader appends to, and only while it reaches a majority; a new leader is elected
//! only `VOTER_LEASE` after the last entry its predecessor committed (the voter of its quorum
//! that stored that entry refused votes for that long: openraft's leader lease). A node cut off applies nothing new. A new leader is assumed to know no
//! renewal times (as after a restart from a snapshot), so only `NEW_LEADER_WAIT` keeps it
//! from evicting a node whose last renewal it cannot date.
//!
//! Time is relative (each clock counts down or up and saturates where the rules stop caring)
//! and the log is compacted (entries every node applied are folded into a base ledger), so
//! equal situations at different moments are one state. The search is exhaustive over every
//! behaviour of up to [`DEPTH`] steps whose unapplied log stays within [`MAX_TAIL`] entries
//! (1.6 million states, about 15 s in a debug build); `WARDEN_MODEL_DEPTH=20` searches
//! deeper (minutes, gigabytes). The three broken variants are caught well within the bound.
//!
//! Three variants with one rule broken each must be caught (the model has teeth): evicting
//! before the lease can have run out, a new leader that does not wait, and a host that opens
//! the gate with a renewed lease before it stops an instance whose grant is gone.

use stateright::{Checker, Model, Property};

/// Nodes that renew, host and may lead; one more node only votes (it makes the majority).
const NODES: usize = 2;
/// The voter's number.
const VOTER: u8 = 2;
/// The longest unapplied tail of the log explored.
const MAX_TAIL: usize = 4;
/// Steps explored from the start (each an action below) unless `WARDEN_MODEL_DEPTH` says.
const DEPTH: usize = 14;

fn depth() -> usize {
    std::env::var("WARDEN_MODEL_DEPTH").ok().and_then(|d| d.parse().ok()).unwrap_or(DEPTH)
}

#[derive(Clone, Copy, Debug)]
struct Rules {
    /// Ticks a renewal's lease lasts, from when it was sent.
    lease: u8,
    /// Ticks after the leader applied a node's last renewal before it evicts the node.
    evict_after: u8,
    /// Ticks after the last committed entry before another node may be elected
    /// (`VOTER_LEASE`).
    voter_lease: u8,
    /// Ticks a new leader waits before it evicts anyone.
    new_leader_wait: u8,
    /// The host publishes a renewed lease before stopping instances whose grant went.
    publish_before_revoke: bool,
}

/// The shipped rules, scaled to whole ticks. They keep the two relations docs/cluster.md
/// derives: `evict_after >= lease` and `voter_lease + new_leader_wait >= lease` (a tick is
/// discrete, so equality is enough here; the shipped values add a clock margin).
const RIGHT: Rules =
    Rules { lease: 2, evict_after: 2, voter_lease: 1, new_leader_wait: 1, publish_before_revoke: false };

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Cmd {
    Renew(u8),
    /// Evict a node. The real command carries the renewal count the leader saw and is void
    /// if the node renewed since; the model resolves that when the leader appends it (the
    /// renewals between the leader's view and the end of the log are known then) and only
    /// appends evictions that take effect.
    Evict(u8),
    Grant(u8),
}

#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
struct Node {
    /// Entries of the tail applied.
    applied: u8,
    /// The last renewal committed: (ticks left, tail entries it needs applied).
    renewed: Option<(u8, u8)>,
    /// Ticks left of the lease the host published (its gates are open while it is > 0).
    published: u8,
    /// An instance runs here.
    running: bool,
    /// Age in ticks of a renewal sent and not committed yet.
    in_flight: Option<u8>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct State {
    base: Ledger,
    tail: Vec<Cmd>,
    leader: u8,
    /// Ticks since the leader was elected (saturates at new_leader_wait).
    led_for: u8,
    /// Ticks since the last commit (saturates at voter_lease).
    quiet_for: u8,
    /// The leader's last plan is applied up to this tail length.
    plan_upto: u8,
    /// Ticks since the leader applied each node's latest renewal (saturates at evict_after;
    /// only the leader's clocks matter, and a new leader starts without any).
    seen: [u8; NODES],
    /// The node cut off from the other two (0, 1 or the voter), if any.
    cut: Option<u8>,
    cuts_left: u8,
    elections_left: u8,
    nodes: [Node; NODES],
}

/// What the log says: the owner and who is evicted.
#[derive(Clone, Copy, Default, Debug, Hash, PartialEq, Eq)]
struct Ledger {
    owner: Option<u8>,
    evicted: [bool; NODES],
}

impl Ledger {
    fn apply(&mut self, c: Cmd) {
        match c {
            Cmd::Renew(n) => self.evicted[n as usize] = false,
            Cmd::Evict(n) => {
                self.evicted[n as usize] = true;
                if self.owner == Some(n) {
                    self.owner = None;
                }
            }
            Cmd::Grant(n) if self.owner.is_none() && !self.evicted[n as usize] => self.owner = Some(n),
            Cmd::Grant(_) => {}
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Action {
    Tick,
    SendRenew(u8),
    CommitRenew(u8),
    LoseRenew(u8),
    /// A node applies the next entry, then its host reconciles (a host that lags is a node
    /// that applies later: what the host does depends only on what was applied).
    Apply(u8),
    Plan,
    Elect(u8),
    Cut(u8),
    Heal,
}

struct Protocol(Rules);

impl State {
    fn reaches_majority(&self, n: u8) -> bool {
        self.cut != Some(n)
    }
    fn connected(&self, a: u8, b: u8) -> bool {
        a == b || (self.cut != Some(a) && self.cut != Some(b))
    }
    fn view(&self, n: u8) -> Ledger {
        let mut l = self.base;
        for c in &self.tail[..self.nodes[n as usize].applied as usize] {
            l.apply(*c);
        }
        l
    }
    fn commit(&mut self, c: Cmd) {
        self.tail.push(c);
        self.quiet_for = 0;
    }
    /// Folds the entries every node applied into the base.
    fn compact(&mut self) {
        let done = self.nodes.iter().map(|n| n.applied).min().unwrap_or(0);
        for c in self.tail.drain(..done as usize) {
            self.base.apply(c);
        }
        for n in self.nodes.iter_mut() {
            n.applied -= done;
            if let Some((_, index)) = n.renewed.as_mut() {
                *index = index.saturating_sub(done);
            }
        }
        self.plan_upto = self.plan_upto.saturating_sub(done);
    }
}

/// The host of node `n` reconciles: it runs the instance if the ledger it applied grants it
/// here and its lease holds, and publishes the lease only after that.
fn host(s: &mut State, n: u8) {
    let view = s.view(n);
    let node = &mut s.nodes[n as usize];
    let lease = node.renewed.filter(|(_, index)| node.applied >= *index).map(|(left, _)| left);
    match lease {
        Some(left) => {
            node.running = view.owner == Some(n);
            node.published = node.published.max(left);
        }
        None => {
            node.running = false;
            node.published = 0;
        }
    }
}

impl Model for Protocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        // Node 0 leads; node 0 or node 1 owns the singleton and runs it under a fresh lease;
        // everyone applied that.
        (0..NODES as u8)
            .map(|owner| {
                let mut base = Ledger::default();
                for c in [Cmd::Renew(0), Cmd::Renew(1), Cmd::Grant(owner)] {
                    base.apply(c);
                }
                let mut nodes =
                    [Node { renewed: Some((self.0.lease, 0)), published: self.0.lease, ..Node::default() }; NODES];
                nodes[owner as usize].running = true;
                State {
                    base,
                    tail: Vec::new(),
                    leader: 0,
                    led_for: self.0.new_leader_wait,
                    quiet_for: 0,
                    plan_upto: 0,
                    seen: [0; NODES],
                    cut: None,
                    cuts_left: 1,
                    elections_left: 1,
                    nodes,
                }
            })
            .collect()
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        out.push(Action::Tick);
        for n in 0..NODES as u8 {
            let node = &s.nodes[n as usize];
            match node.in_flight {
                None => out.push(Action::SendRenew(n)),
                Some(_) => {
                    out.push(Action::CommitRenew(n));
                    out.push(Action::LoseRenew(n));
                }
            }
            if (node.applied as usize) < s.tail.len() {
                out.push(Action::Apply(n));
            }
            if s.elections_left > 0 && n != s.leader {
                out.push(Action::Elect(n));
            }
            if s.cuts_left > 0 && s.cut.is_none() {
                out.push(Action::Cut(n));
            }
        }
        if s.cuts_left > 0 && s.cut.is_none() {
            out.push(Action::Cut(VOTER));
        }
        out.push(Action::Plan);
        if s.cut.is_some() {
            out.push(Action::Heal);
        }
    }

    fn next_state(&self, s: &State, a: Action) -> Option<State> {
        let r = self.0;
        let mut s = s.clone();
        match a {
            Action::Tick => {
                s.led_for = (s.led_for + 1).min(r.new_leader_wait);
                s.quiet_for = (s.quiet_for + 1).min(r.voter_lease);
                for seen in s.seen.iter_mut() {
                    *seen = (*seen + 1).min(r.evict_after);
                }
                for n in s.nodes.iter_mut() {
                    n.published = n.published.saturating_sub(1);
                    if let Some((left, _)) = n.renewed.as_mut() {
                        *left = left.saturating_sub(1);
                    }
                    if n.renewed.is_some_and(|(left, _)| left == 0) {
                        n.renewed = None;
                    }
                    if let Some(age) = n.in_flight.as_mut() {
                        *age = (*age + 1).min(r.lease);
                    }
                }
            }
            // Sent and lost again within a tick gives back the same state, so renewals need
            // no timer of their own here.
            Action::SendRenew(n) => s.nodes[n as usize].in_flight = Some(0),
            Action::LoseRenew(n) => s.nodes[n as usize].in_flight = None,
            Action::CommitRenew(n) => {
                if !s.reaches_majority(s.leader) || !s.connected(n, s.leader) {
                    return None;
                }
                let age = s.nodes[n as usize].in_flight.take()?;
                s.commit(Cmd::Renew(n));
                let len = s.tail.len() as u8;
                let node = &mut s.nodes[n as usize];
                let left = r.lease - age;
                node.renewed = (left > 0).then_some((left, len));
                if r.publish_before_revoke {
                    node.published = node.published.max(left);
                }
            }
            Action::Apply(n) => {
                if !s.connected(n, s.leader) {
                    return None;
                }
                let node = &mut s.nodes[n as usize];
                if let Some(Cmd::Renew(m)) = s.tail.get(node.applied as usize) {
                    if n == s.leader {
                        s.seen[*m as usize] = 0;
                    }
                }
                node.applied += 1;
                host(&mut s, n);
            }
            Action::Plan => {
                let l = s.leader;
                // The leader plans on what it applied, one batch at a time: the next plan
                // waits until the leader applied the last one.
                if !s.reaches_majority(l) || s.nodes[l as usize].applied < s.plan_upto {
                    return None;
                }
                let view = s.view(l);
                let seen = s.seen;
                let unseen = &s.tail[s.nodes[l as usize].applied as usize..];
                let renewed_since = |m: usize| unseen.contains(&Cmd::Renew(m as u8));
                let mut cmds = Vec::new();
                let led_long_enough = s.led_for >= r.new_leader_wait;
                let fresh = |m: usize| seen[m] < r.evict_after;
                let mut evicting = [false; NODES];
                for (m, evicting) in evicting.iter_mut().enumerate() {
                    if led_long_enough && !view.evicted[m] && !fresh(m) && !renewed_since(m) {
                        cmds.push(Cmd::Evict(m as u8));
                        *evicting = true;
                    }
                }
                let owner_gone = view.owner.is_none_or(|o| evicting[o as usize]);
                if owner_gone {
                    if let Some(y) = (0..NODES).find(|m| !view.evicted[*m] && !evicting[*m] && fresh(*m)) {
                        cmds.push(Cmd::Grant(y as u8));
                    }
                }
                if cmds.is_empty() {
                    return None;
                }
                for c in cmds {
                    s.commit(c);
                }
                s.plan_upto = s.tail.len() as u8;
            }
            Action::Elect(n) => {
                if !s.reaches_majority(n) || s.quiet_for < r.voter_lease {
                    return None;
                }
                s.leader = n;
                s.led_for = 0;
                s.plan_upto = 0;
                s.elections_left -= 1;
                // A new leader may know no renewal times at all (it rebuilt its state from a
                // snapshot, which does not carry them): the worst case, every node looks stale.
                s.seen = [r.evict_after; NODES];
            }
            Action::Cut(n) => {
                s.cut = Some(n);
                s.cuts_left -= 1;
            }
            Action::Heal => s.cut = None,
        }
        s.compact();
        Some(s)
    }

    fn within_boundary(&self, s: &State) -> bool {
        s.tail.len() <= MAX_TAIL
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![Property::<Self>::always("at most one instance serves", |_, s| {
            s.nodes.iter().filter(|n| n.running && n.published > 0).count() <= 1
        })]
    }
}

#[test]
fn at_most_one_instance_serves_in_every_reachable_state() {
    let checker = Protocol(RIGHT).checker().target_max_depth(depth()).threads(2).spawn_bfs().join();
    eprintln!("ownership model: {} states, {} unique", checker.state_count(), checker.unique_state_count());
    checker.assert_properties();
    assert!(checker.unique_state_count() > 1_000_000, "a real search: {} states", checker.unique_state_count());
}

#[test]
fn evicting_before_the_lease_ran_out_is_caught() {
    let rules = Rules { evict_after: RIGHT.lease - 1, ..RIGHT };
    Protocol(rules)
        .checker()
        .target_max_depth(depth())
        .threads(2)
        .spawn_bfs()
        .join()
        .assert_any_discovery("at most one instance serves");
}

#[test]
fn a_new_leader_that_does_not_wait_is_caught() {
    let rules = Rules { new_leader_wait: 0, ..RIGHT };
    Protocol(rules)
        .checker()
        .target_max_depth(depth())
        .threads(2)
        .spawn_bfs()
        .join()
        .assert_any_discovery("at most one instance serves");
}

#[test]
fn a_host_that_opens_the_gate_before_revoking_is_caught() {
    let rules = Rules { publish_before_revoke: true, ..RIGHT };
    Protocol(rules)
        .checker()
        .target_max_depth(depth())
        .threads(2)
        .spawn_bfs()
        .join()
        .assert_any_discovery("at most one instance serves");
}
