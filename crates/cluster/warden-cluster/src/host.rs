//! A node's singleton host: it keeps the node's lease, and runs exactly the singletons the
//! ledger grants to the node while the lease holds.
//!
//! The lease: every [`RENEW_EVERY`] the host proposes a renewal; once the group has committed
//! it and this node has applied it, the node may serve until [`LEASE`] after the moment the
//! renewal was queued. The decision of what to run is the pure [`reconcile`]: given the
//! ledger's ownership of the singletons that changed, what runs here, and whether the lease
//! holds, it answers what to start, kill and hand off. The host carries the actions out:
//!
//! * **start**: a one-for-one supervisor for the instance, built with a
//!   [`SingletonContext`] that carries the grant's token;
//!   the instance's restore opens its keys, fencing every earlier writer;
//! * **kill**: the grant is gone (moved, or the node was evicted) or the lease ran out: the
//!   instance's gate closes at once, then it is killed (no final snapshot: it may not write);
//! * **hand off**: the leader asks the node to give the singleton to another: the instance
//!   stops gracefully (its final snapshot is written under its still valid token), then the
//!   host releases it, and the ledger grants it to the target.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use warden_checkpoint::Checkpoints;
use warden_core::report::DEFAULT_FLIGHT_RECORDER_CAPACITY;
use warden_core::{EventBus, Supervisor, SupervisorRef, SupervisorSpec};

use crate::events::{ClusterEvent, Events, Phase, StopCause};
use crate::ledger::{Command, NodeId, Outcome, Ownership};
use crate::proposer::Proposer;
use crate::raft::state_machine::Shared;
use crate::raft::timing::{LEASE, RENEW_EVERY};
use crate::reads::ReadBarrier;
use crate::singleton::{Gate, Lease, Locator, SingletonContext, SingletonSpec};

/// How often the host looks again even when nothing changed.
pub const RECONCILE_EVERY: Duration = Duration::from_millis(20);
/// How many instances start at once (each opens its keys through the log).
pub const MAX_CONCURRENT_STARTS: usize = 32;
/// Restart intensity of each instance's supervisor.
pub const INSTANCE_INTENSITY: (u32, Duration) = (50, Duration::from_secs(10));

/// Events a subscriber of one singleton's tree (`Node::supervisor(name).subscribe()`) may fall
/// behind before it loses some (`RecvError::Lagged`, with the count). Each instance runs its
/// own root supervisor, and a bus's buffer is allocated whole at its first subscription: at
/// the core's default (4,096 events, about 380 KiB) a process that subscribed to each of
/// 2,000 singletons held about 780 MB in these buffers alone. A tree of one child publishes a
/// handful of events per restart.
pub const SINGLETON_EVENT_CAPACITY: usize = 64;

/// The most committed renewals kept while waiting to be applied (one per [`RENEW_EVERY`]
/// for a lease's length is 7); past it the oldest is dropped, which can only shorten the lease.
pub const MAX_PENDING_RENEWALS: usize = 16;

/// The lease the node holds now: the newest renewal it applied, if still valid. Drops the
/// renewals a newer applied one supersedes.
fn newest_applied(renewed: &mut VecDeque<(Instant, u64)>, applied: u64, now: Instant) -> Option<Instant> {
    while renewed.len() > 1 && renewed[1].1 <= applied {
        renewed.pop_front();
    }
    match renewed.front() {
        Some(&(until, index)) if index <= applied && now < until => Some(until),
        _ => None,
    }
}

/// Keeps a committed renewal (valid `until`, at log `index`) until it is applied; past
/// [`MAX_PENDING_RENEWALS`] the oldest goes (which can only shorten the lease).
fn keep_renewal(renewed: &mut VecDeque<(Instant, u64)>, until: Instant, index: u64) {
    if renewed.len() >= MAX_PENDING_RENEWALS {
        renewed.pop_front();
    }
    renewed.push_back((until, index));
}

/// What runs here, as [`reconcile`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    /// The grant it runs under.
    pub token: u64,
    /// Its handoff has begun.
    pub handing_off: bool,
}

/// What the host must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start an instance under `token`.
    Start {
        /// The singleton.
        name: String,
        /// Its grant's token.
        token: u64,
    },
    /// Kill the instance (its grant or the lease is gone).
    Kill {
        /// The singleton.
        name: String,
    },
    /// Stop the instance gracefully, then release the singleton under `token`.
    HandOff {
        /// The singleton.
        name: String,
        /// Its grant's token.
        token: u64,
    },
}

/// The host's decision for the singletons in `changed` (their ownership from the ledger),
/// given what runs here and whether the lease holds.
pub fn reconcile(
    me: NodeId,
    serving: bool,
    changed: &[(String, Ownership)],
    running: &HashMap<String, Running>,
) -> Vec<Action> {
    let mut out = Vec::new();
    if !serving {
        let mut names: Vec<&String> = running.keys().collect();
        names.sort();
        return names.into_iter().map(|name| Action::Kill { name: name.clone() }).collect();
    }
    for (name, ownership) in changed {
        let here = running.get(name);
        match (*ownership, here) {
            (Ownership::Owned { node, token }, None) if node == me => {
                out.push(Action::Start { name: name.clone(), token })
            }
            (Ownership::Owned { node, token }, Some(r)) if node == me && r.token == token && !r.handing_off => {}
            (Ownership::HandingOff { node, token, .. }, Some(r)) if node == me && r.token == token => {
                if !r.handing_off {
                    out.push(Action::HandOff { name: name.clone(), token });
                }
            }
            (Ownership::HandingOff { node, token, .. }, None) if node == me => {
                // Nothing runs (it could not start): release at once.
                out.push(Action::HandOff { name: name.clone(), token });
            }
            (_, Some(_)) => out.push(Action::Kill { name: name.clone() }),
            (_, None) => {}
        }
    }
    out
}

struct Instance {
    running: Running,
    supervisor: Option<SupervisorRef>,
    gate: Arc<Gate>,
}

/// The host of one node.
pub(crate) struct Host {
    me: NodeId,
    name: String,
    addr: String,
    specs: HashMap<String, SingletonSpec>,
    shared: Arc<Shared>,
    proposer: Proposer,
    checkpoints: Checkpoints,
    reads: ReadBarrier,
    locator: Locator,
    lease: Arc<Lease>,
    /// Committed renewals, oldest first: (valid until, entry index it needs applied). A
    /// newer renewal counts only once applied, so the older ones stay until it is.
    renewed: Mutex<VecDeque<(Instant, u64)>>,
    instances: Mutex<HashMap<String, Instance>>,
    starts: Arc<Semaphore>,
    events: Events,
    /// The host's own loops (registration, renewals, reconciliation), stopped by `shutdown`.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// What starts a host.
pub(crate) struct HostParts {
    pub me: NodeId,
    pub name: String,
    pub addr: String,
    pub specs: Vec<SingletonSpec>,
    pub shared: Arc<Shared>,
    pub proposer: Proposer,
    pub checkpoints: Checkpoints,
    pub reads: ReadBarrier,
    pub locator: Locator,
    pub events: Events,
}

impl Host {
    pub(crate) fn start(parts: HostParts) -> Arc<Host> {
        let host = Arc::new(Host {
            me: parts.me,
            name: parts.name,
            addr: parts.addr,
            specs: parts.specs.into_iter().map(|s| (s.name.clone(), s)).collect(),
            shared: parts.shared,
            proposer: parts.proposer,
            checkpoints: parts.checkpoints,
            reads: parts.reads,
            locator: parts.locator,
            lease: Arc::new(Lease::default()),
            renewed: Mutex::new(VecDeque::new()),
            instances: Mutex::new(HashMap::new()),
            starts: Arc::new(Semaphore::new(MAX_CONCURRENT_STARTS)),
            events: parts.events,
            tasks: Mutex::new(Vec::new()),
        });
        let tasks = vec![
            tokio::spawn(register(host.clone())),
            tokio::spawn(renew(host.clone())),
            tokio::spawn(run(host.clone())),
        ];
        *host.tasks.lock().unwrap_or_else(PoisonError::into_inner) = tasks;
        host
    }

    fn instances(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instance>> {
        self.instances.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Until when the node may serve, if it may now: its lease holds and it applied the
    /// renewal (so it has seen every grant change before it). Not published yet: the caller
    /// first stops what it no longer holds, then publishes (`tests/ownership_model.rs` shows
    /// what goes wrong the other way round).
    fn lease_now(&self) -> Option<Instant> {
        let applied = self.shared.applied();
        let mut renewed = self.renewed.lock().unwrap_or_else(PoisonError::into_inner);
        newest_applied(&mut renewed, applied, Instant::now())
    }

    /// The singletons running here.
    pub(crate) fn hosted(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.instances().iter().filter(|(_, i)| i.supervisor.is_some()).map(|(n, _)| n.clone()).collect();
        names.sort();
        names
    }

    /// The supervisor of a singleton running here.
    pub(crate) fn supervisor(&self, name: &str) -> Option<SupervisorRef> {
        self.instances().get(name).and_then(|i| i.supervisor.clone())
    }

    /// The lease's time left (zero: not serving).
    pub(crate) fn lease_left(&self) -> Duration {
        self.lease.left()
    }

    /// Stops every instance gracefully (the node stops).
    pub(crate) async fn shutdown(&self) {
        // First the loops, so that nothing renews the lease or starts an instance again.
        let tasks: Vec<_> = self.tasks.lock().unwrap_or_else(PoisonError::into_inner).drain(..).collect();
        for task in tasks {
            task.abort();
        }
        let sups: Vec<SupervisorRef> = self.instances().drain().filter_map(|(_, i)| i.supervisor).collect();
        for sup in sups {
            sup.shutdown().await;
        }
    }
}

async fn register(host: Arc<Host>) {
    let decls: Vec<(String, Vec<String>)> = host.specs.values().map(|s| (s.name.clone(), s.keys.clone())).collect();
    if decls.is_empty() {
        return;
    }
    loop {
        match host.proposer.submit(vec![Command::Register { singletons: decls.clone() }]).await {
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(target: "warden::cluster", error = %e, "registering singletons; retrying");
                tokio::time::sleep(RENEW_EVERY).await;
            }
        }
    }
}

async fn renew(host: Arc<Host>) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // The lease counts from before the renewal is even queued.
        let sent = Instant::now();
        let command = Command::Renew { node: host.me, name: host.name.clone(), addr: host.addr.clone() };
        let result = host.proposer.submit_urgent(vec![command]).await;
        let took = sent.elapsed();
        if took > LEASE / 2 {
            tracing::warn!(target: "warden::cluster", node = host.me, took_ms = took.as_millis() as u64, ok = result.is_ok(), "a lease renewal was slow");
        }
        match result {
            Ok(done) => {
                if matches!(done.outcomes.first().and_then(|o| o.first()), Some(Outcome::Renewed { .. })) {
                    let mut renewed = host.renewed.lock().unwrap_or_else(PoisonError::into_inner);
                    keep_renewal(&mut renewed, sent + LEASE, done.index);
                } else {
                    tracing::debug!(target: "warden::cluster", node = host.me, outcome = ?done.outcomes, "renewal refused");
                }
            }
            Err(e) => tracing::debug!(target: "warden::cluster", node = host.me, error = %e, "renewal failed"),
        }
    }
}

async fn run(host: Arc<Host>) {
    let mut was_serving = false;
    let mut full_check = Instant::now();
    loop {
        tokio::select! {
            _ = host.shared.changed() => {}
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
        }
        let lease = host.lease_now();
        let serving = lease.is_some();
        if !serving {
            host.lease.set_until(None); // gates close at once
        }
        let mut names = host.shared.take_changes();
        // Regaining the lease, and now and then anyway: look at everything.
        if (serving && !was_serving) || full_check.elapsed() > Duration::from_secs(1) {
            names.extend(host.specs.keys().cloned());
            full_check = Instant::now();
        }
        if serving != was_serving {
            host.events.send(if serving { ClusterEvent::Serving } else { ClusterEvent::NotServing });
        }
        was_serving = serving;
        let changed: Vec<(String, Ownership)> = host.shared.read(|l| {
            names
                .iter()
                .filter(|n| host.specs.contains_key(*n))
                .map(|n| (n.clone(), l.singletons.get(n).map_or(Ownership::Unowned, |s| s.ownership)))
                .collect()
        });
        let running: HashMap<String, Running> = host.instances().iter().map(|(n, i)| (n.clone(), i.running)).collect();
        for action in reconcile(host.me, serving, &changed, &running) {
            carry_out(&host, action);
        }
        // Only now, with every instance whose grant went revoked, may gates open further.
        if serving {
            host.lease.set_until(lease);
        }
    }
}

/// Removes `name`'s instance if it is still the one behind `gate` (not a newer incarnation).
fn remove_if_same(host: &Host, name: &str, gate: &Arc<Gate>) {
    let mut instances = host.instances();
    if instances.get(name).is_some_and(|i| Arc::ptr_eq(&i.gate, gate)) {
        instances.remove(name);
    }
}

fn carry_out(host: &Arc<Host>, action: Action) {
    match action {
        Action::Start { name, token } => {
            let Some(spec) = host.specs.get(&name).cloned() else { return };
            host.events.send(ClusterEvent::Phase { step: Phase::Grant, detail: name.clone() });
            let gate = Arc::new(Gate {
                name: name.clone(),
                lease: host.lease.clone(),
                revoked: Arc::default(),
                directory: host.locator.directory.clone(),
            });
            host.instances().insert(
                name.clone(),
                Instance { running: Running { token, handing_off: false }, supervisor: None, gate: gate.clone() },
            );
            let host = host.clone();
            tokio::spawn(async move {
                let _permit = host.starts.clone().acquire_owned().await;
                let ctx = SingletonContext {
                    name: name.clone(),
                    node: host.me,
                    node_name: host.name.clone(),
                    token,
                    checkpoints: host.checkpoints.clone(),
                    gate: gate.clone(),
                    reads: host.reads.clone(),
                    locator: host.locator.clone(),
                };
                let mut child = (spec.make)(&ctx);
                if let Some(d) = spec.deadline {
                    child = child.deadline(d);
                }
                let spec =
                    SupervisorSpec::one_for_one().intensity(INSTANCE_INTENSITY.0, INSTANCE_INTENSITY.1).child(child);
                let bus = EventBus::with_recorder(SINGLETON_EVENT_CAPACITY, DEFAULT_FLIGHT_RECORDER_CAPACITY);
                match Supervisor::start_with_events(&format!("singleton-{name}"), spec, bus).await {
                    Ok(sup) => {
                        let keep = {
                            let mut instances = host.instances();
                            match instances.get_mut(&name) {
                                Some(i) if i.running.token == token && !gate.revoked.load(Ordering::Acquire) => {
                                    i.supervisor = Some(sup.clone());
                                    true
                                }
                                _ => false,
                            }
                        };
                        if keep {
                            host.events.send(ClusterEvent::Started { name, token });
                        } else {
                            if let Some(c) = sup.cell() {
                                c.kill();
                            }
                        }
                    }
                    Err(e) => {
                        // Only this incarnation's entry: a newer one of the same name may have
                        // taken its place meanwhile.
                        remove_if_same(&host, &name, &gate);
                        host.events.send(ClusterEvent::StartFailed { name, error: e.to_string() });
                    }
                }
            });
        }
        Action::Kill { name } => {
            if let Some(instance) = host.instances().remove(&name) {
                instance.gate.revoked.store(true, Ordering::Release);
                if let Some(sup) = instance.supervisor {
                    if let Some(cell) = sup.cell() {
                        cell.kill();
                    }
                }
                host.events.send(ClusterEvent::Stopped { name, why: StopCause::Revoked });
            }
        }
        Action::HandOff { name, token } => {
            let (sup, gate) = {
                let mut instances = host.instances();
                match instances.get_mut(&name) {
                    Some(i) => {
                        i.running.handing_off = true;
                        (i.supervisor.clone(), Some(i.gate.clone()))
                    }
                    None => (None, None),
                }
            };
            let host = host.clone();
            tokio::spawn(async move {
                if let Some(sup) = sup {
                    sup.shutdown().await; // its final snapshot, under the still valid token
                }
                if let Some(gate) = gate {
                    gate.revoked.store(true, Ordering::Release);
                    remove_if_same(&host, &name, &gate);
                }
                host.events.send(ClusterEvent::Phase { step: Phase::Handoff, detail: name.clone() });
                let release = Command::Release { node: host.me, singletons: vec![(name.clone(), token)] };
                if let Err(e) = host.proposer.submit(vec![release]).await {
                    tracing::warn!(target: "warden::cluster", singleton = %name, error = %e, "release not committed; the leader will give the handoff up");
                }
                host.events.send(ClusterEvent::HandedOff { name });
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_waiting_to_apply_are_bounded_oldest_first() {
        let now = Instant::now();
        let mut renewed = VecDeque::new();
        for index in 1..=MAX_PENDING_RENEWALS as u64 + 2 {
            keep_renewal(&mut renewed, now + Duration::from_millis(index), index);
        }
        assert_eq!(renewed.len(), MAX_PENDING_RENEWALS);
        assert_eq!(renewed.front().map(|r| r.1), Some(3), "the two oldest went");
        // Once the newest is applied, it is the lease.
        let newest = MAX_PENDING_RENEWALS as u64 + 2;
        assert_eq!(newest_applied(&mut renewed, newest, now), Some(now + Duration::from_millis(newest)));
    }

    #[test]
    fn a_newer_renewal_counts_only_once_applied_and_the_older_one_holds_meanwhile() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r: VecDeque<(Instant, u64)> = VecDeque::from([(at(700), 10), (at(800), 12)]);
        // Applied up to 11: the renewal at 12 is not seen yet, the one at 10 holds.
        assert_eq!(newest_applied(&mut r, 11, at(100)), Some(at(700)));
        assert_eq!(r.len(), 2);
        // Applied 12: the newer one takes over and the older is dropped.
        assert_eq!(newest_applied(&mut r, 12, at(100)), Some(at(800)));
        assert_eq!(r.len(), 1);
        // Past its end: not serving.
        assert_eq!(newest_applied(&mut r, 12, at(800)), None);
        // Nothing applied yet.
        let mut r = VecDeque::from([(at(700), 5)]);
        assert_eq!(newest_applied(&mut r, 4, at(0)), None);
    }

    fn owned(node: NodeId, token: u64) -> Ownership {
        Ownership::Owned { node, token }
    }

    #[test]
    fn starts_what_is_granted_here_and_kills_what_is_not() {
        let changed = vec![("a".to_string(), owned(1, 5)), ("b".to_string(), owned(2, 6))];
        let mut running = HashMap::new();
        running.insert("b".to_string(), Running { token: 3, handing_off: false });
        let actions = reconcile(1, true, &changed, &running);
        assert_eq!(actions, vec![Action::Start { name: "a".into(), token: 5 }, Action::Kill { name: "b".into() }]);
    }

    #[test]
    fn an_instance_under_an_old_token_is_killed_then_started_again() {
        let changed = vec![("a".to_string(), owned(1, 9))];
        let running = HashMap::from([("a".to_string(), Running { token: 5, handing_off: false })]);
        assert_eq!(reconcile(1, true, &changed, &running), vec![Action::Kill { name: "a".into() }]);
        assert_eq!(reconcile(1, true, &changed, &HashMap::new()), vec![Action::Start { name: "a".into(), token: 9 }]);
    }

    #[test]
    fn without_the_lease_everything_stops() {
        let running = HashMap::from([
            ("a".to_string(), Running { token: 1, handing_off: false }),
            ("b".to_string(), Running { token: 2, handing_off: true }),
        ]);
        let actions = reconcile(1, false, &[("a".to_string(), owned(1, 1))], &running);
        assert_eq!(actions, vec![Action::Kill { name: "a".into() }, Action::Kill { name: "b".into() }]);
    }

    #[test]
    fn a_handoff_is_begun_once() {
        let handing = vec![("a".to_string(), Ownership::HandingOff { node: 1, token: 4, to: 2 })];
        let running = HashMap::from([("a".to_string(), Running { token: 4, handing_off: false })]);
        assert_eq!(reconcile(1, true, &handing, &running), vec![Action::HandOff { name: "a".into(), token: 4 }]);
        let begun = HashMap::from([("a".to_string(), Running { token: 4, handing_off: true })]);
        assert!(reconcile(1, true, &handing, &begun).is_empty());
    }
}
