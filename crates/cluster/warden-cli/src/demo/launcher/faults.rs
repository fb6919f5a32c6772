//! Injecting the planned faults: resolving their targets against what the world knows, doing
//! it (signals, namespaces' packet rules, requests to the nodes, processes started and
//! stopped), and opening the fault record that [`World`](super::world::World) then follows.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::process::signal;
use super::world::{Open, Proc};
use super::Launcher;
use crate::demo::plan::{Action, ActorTarget, Cut, Fault, NodeRef};
use crate::demo::protocol::{Answer, Op};
use crate::demo::report::FaultRecord;

/// How long a fault aimed at an actor keeps trying to reach it (it may be moving).
pub const ACTOR_FAULT_RETRY: Duration = Duration::from_secs(3);
/// How long a stop-at waits for its step before it gives up.
pub const STEP_WAIT: Duration = Duration::from_secs(15);
/// How long a leaving node may take to hand off and exit.
pub const LEAVE_WAIT: Duration = Duration::from_secs(40);

fn resolve(l: &Launcher, r: &NodeRef) -> Option<String> {
    match r {
        NodeRef::Named(n) => Some(n.clone()),
        NodeRef::Killed => l.last_killed.lock().ok().and_then(|k| k.clone()),
        NodeRef::Hosting(s) => {
            let w = l.world();
            w.hosts
                .get(s)
                .and_then(|on| on.keys().find(|n| w.nodes.get(*n).is_some_and(|i| i.proc == Proc::Up)).cloned())
        }
        NodeRef::Leader => {
            let w = l.world();
            w.leader.and_then(|id| w.name_of(id))
        }
    }
}

fn record(l: &Launcher, f: &Fault, target: String) -> FaultRecord {
    FaultRecord {
        kind: f.action.kind().to_string(),
        target,
        injected_at_ms: l.workload_now(),
        ..FaultRecord::default()
    }
}

fn open(l: &Launcher, f: &Fault, mut rec: FaultRecord, node: Option<String>, actor: Option<ActorTarget>) -> Open {
    let displaced = node.as_ref().map(|n| l.world().hosted_by(n)).unwrap_or_default();
    if let Some(n) = &node {
        let w = l.world();
        rec.was_leader = w.leader.map(|id| w.name_of(id).as_deref() == Some(n.as_str()));
    }
    let key_displaced = displaced.contains(l.demo.key_singleton());
    Open {
        injected: rec.injected_at_ms,
        rec,
        action: f.action.clone(),
        node,
        actor,
        displaced: BTreeSet::new(),
        minority: BTreeSet::new(),
        key_displaced,
        must_serve: BTreeSet::new(),
        needs_success: false,
        needs_gone: false,
    }
    .with_displaced(displaced)
}

impl Open {
    fn with_displaced(mut self, displaced: BTreeSet<String>) -> Open {
        self.displaced = displaced;
        self
    }
}

/// The addresses of `names`.
fn ips(l: &Launcher, names: &[String]) -> Vec<IpAddr> {
    let slots = l.slots();
    names.iter().filter_map(|n| slots.get(n).map(|s| l.net.ip(s.index))).collect()
}

/// Installs the drop rules of `cut` in the namespace of node `name` (process `pid`).
fn apply_cut(l: &Launcher, cut: &Cut, name: &str, pid: u32) {
    let (a, b, both) = match cut {
        Cut::Sides(a, b) => (a, b, true),
        Cut::OneWay(a, b) => (a, b, false),
    };
    let result = if a.iter().any(|n| n == name) {
        l.net.block(pid, &ips(l, b), both)
    } else if both && b.iter().any(|n| n == name) {
        l.net.block(pid, &ips(l, a), true)
    } else {
        Ok(())
    };
    if let Err(e) = result {
        l.note(format!("partition rules for {name} failed: {e:#}"));
    }
}

/// Re-installs the current cut for a node that just (re)started.
pub fn reapply_cut(l: &Launcher, name: &str, pid: u32) {
    let cut = l.world().cut.clone();
    if let Some(cut) = cut {
        apply_cut(l, &cut, name, pid);
    }
}

/// The nodes of `cut` on a side that reaches no majority (with the nodes on neither side).
fn minority(members: &[String], cut: &Cut) -> BTreeSet<String> {
    let (a, b) = match cut {
        Cut::Sides(a, b) | Cut::OneWay(a, b) => (a, b),
    };
    let others = members.iter().filter(|m| !a.contains(m) && !b.contains(m)).count();
    let majority = members.len() / 2 + 1;
    [a, b].into_iter().filter(|side| side.len() + others < majority).flat_map(|s| s.iter().cloned()).collect()
}

async fn kill(l: &Launcher, node: &str) {
    if let Some(mut running) = l.take_process(node) {
        let _ = running.child.start_kill();
        let _ = running.child.wait().await;
    }
    let mut w = l.world();
    if let Some(n) = w.nodes.get_mut(node) {
        n.proc = Proc::Killed;
        n.serving = false;
    }
    for on in w.hosts.values_mut() {
        on.remove(node);
    }
}

/// Injects one fault.
pub async fn inject(l: &Launcher, f: &Fault, base: &Path) {
    match &f.action {
        Action::Panic(actor) | Action::Hang(actor) => {
            let panic = matches!(f.action, Action::Panic(_));
            // The node protocol names a pool worker `worker` (on the node asked).
            let (node, target) = match actor {
                ActorTarget::Worker(n) => (Some(n.clone()), "worker".to_string()),
                ActorTarget::Singleton(name) => (None, name.clone()),
            };
            let rec = record(l, f, actor.to_string());
            let deadline = tokio::time::Instant::now() + ACTOR_FAULT_RETRY;
            loop {
                // A pool worker's node, or the node hosting the singleton (it refuses otherwise).
                let host = || resolve(l, &NodeRef::Hosting(target.clone()));
                let via = node.clone().or_else(host).filter(|n| l.up_nodes().contains(n));
                let op = if panic { Op::Panic { target: target.clone() } } else { Op::Hang { target: target.clone() } };
                let sent = match &via {
                    Some(via) => l.request(via, op, Duration::from_secs(2)).await,
                    None => None, // moving: no host now
                };
                if matches!(sent, Some(Answer::Sent | Answer::Armed)) {
                    let o = Open { displaced: BTreeSet::new(), ..open(l, f, rec, None, Some(actor.clone())) };
                    l.world().faults.push(o);
                    return;
                }
                if tokio::time::Instant::now() > deadline {
                    l.note(format!("{} {actor}: not reachable for {ACTOR_FAULT_RETRY:?}; dropped", f.action.kind()));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Action::Kill(r) | Action::Wipe(r) => {
            let Some(node) = resolve(l, r).filter(|n| l.up_nodes().contains(n)) else {
                l.note(format!("{} {r}: no such running node; dropped", f.action.kind()));
                return;
            };
            let wipe = matches!(f.action, Action::Wipe(_));
            let mut o = open(l, f, record(l, f, node.clone()), Some(node.clone()), None);
            o.needs_success = true;
            if wipe {
                o.must_serve.insert(node.clone());
            }
            {
                let mut w = l.world();
                w.overtaken(&node, f.action.kind(), l.workload_now());
                w.faults.push(o);
            }
            kill(l, &node).await;
            *l.last_killed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(node.clone());
            if wipe {
                let dir = base.join(&node);
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    l.note(format!("wiping {}: {e}", dir.display()));
                }
                if let Err(e) = l.spawn(&node) {
                    l.note(format!("restarting {node} empty: {e:#}"));
                }
            }
        }
        Action::Restart(r) => {
            let Some(node) = resolve(l, r).filter(|n| l.world().nodes.get(n).is_some_and(|i| i.proc == Proc::Killed))
            else {
                l.note(format!("restart {r}: no killed node; dropped"));
                return;
            };
            let mut o = open(l, f, record(l, f, node.clone()), Some(node.clone()), None);
            o.displaced.clear();
            o.must_serve.insert(node.clone());
            l.world().faults.push(o);
            if let Err(e) = l.spawn(&node) {
                l.note(format!("restarting {node}: {e:#}"));
            }
        }
        Action::Stop(r, hold) | Action::StopAt(r, _, hold) => {
            let Some(node) = resolve(l, r).filter(|n| l.up_nodes().contains(n)) else {
                l.note(format!("{} {r}: no such running node; dropped", f.action.kind()));
                return;
            };
            if let Action::StopAt(_, step, _) = &f.action {
                let mut phases = l.phases.subscribe();
                let waited = tokio::time::timeout(STEP_WAIT, async {
                    while let Ok((on, s)) = phases.recv().await {
                        if on == node && s == *step {
                            return true;
                        }
                    }
                    false
                })
                .await;
                if !matches!(waited, Ok(true)) {
                    l.note(format!("stop-at {node}:{step}: the step did not come within {STEP_WAIT:?}; dropped"));
                    return;
                }
            }
            let Some(pid) = l.pid_of(&node) else { return };
            let mut o = open(l, f, record(l, f, node.clone()), Some(node.clone()), None);
            o.needs_success = true;
            l.world().faults.push(o);
            signal(pid, Signal::SIGSTOP);
            if let Some(n) = l.world().nodes.get_mut(&node) {
                n.proc = Proc::Stopped;
            }
            tokio::time::sleep(*hold).await;
            resume(l, &node);
        }
        Action::Partition(cut) => {
            let members: Vec<String> =
                l.world().nodes.iter().filter(|(_, n)| n.proc != Proc::Left).map(|(n, _)| n.clone()).collect();
            let mut o = open(l, f, record(l, f, cut.to_string()), None, None);
            o.minority = minority(&members, cut);
            o.displaced = o.minority.iter().flat_map(|n| l.world().hosted_by(n)).collect();
            o.key_displaced = o.displaced.contains(l.demo.key_singleton());
            o.needs_success = true;
            l.world().cut = Some(cut.clone());
            l.world().faults.push(o);
            for name in members {
                if let Some(pid) = l.pid_of(&name) {
                    apply_cut(l, cut, &name, pid);
                }
            }
        }
        Action::Heal => {
            let mut o = open(l, f, record(l, f, String::new()), None, None);
            // Recovered once every node that lost its lease behind the cut serves again (the
            // nodes that kept serving have nothing to recover).
            let up = l.up_nodes();
            {
                let w = l.world();
                o.must_serve = up.into_iter().filter(|n| w.nodes.get(n).is_some_and(|i| !i.serving)).collect();
            }
            l.world().cut = None;
            l.world().faults.push(o);
            let names: Vec<String> = l.slots().keys().cloned().collect();
            for name in names {
                if let Some(pid) = l.pid_of(&name) {
                    if let Err(e) = l.net.unblock(pid) {
                        l.note(format!("healing {name}: {e:#}"));
                    }
                }
            }
        }
        Action::SlowDisk(r, hold) => {
            let Some(node) = resolve(l, r).filter(|n| l.up_nodes().contains(n)) else { return };
            let mut o = open(l, f, record(l, f, node.clone()), Some(node.clone()), None);
            o.displaced.clear();
            o.needs_success = true;
            let answer = l.request(&node, Op::StallDisk { ms: hold.as_millis() as u64 }, Duration::from_secs(2)).await;
            if matches!(answer, Some(Answer::Done)) {
                o.rec.detected_at_ms = Some(l.workload_now() + hold.as_millis() as u64);
                o.rec.note = "detected: the node took the stall; recovered: a request succeeded after it".into();
            }
            l.world().faults.push(o);
        }
        Action::Join(name) => {
            if let Err(e) = l.add_slot(name, base) {
                l.note(format!("join {name}: {e:#}"));
                return;
            }
            let mut o = open(l, f, record(l, f, name.clone()), Some(name.clone()), None);
            o.must_serve.insert(name.clone());
            l.world().faults.push(o);
            if let Err(e) = l.spawn(name) {
                l.note(format!("join {name}: {e:#}"));
            }
        }
        Action::Leave(r) => {
            let Some(node) = resolve(l, r).filter(|n| l.up_nodes().contains(n)) else { return };
            let mut o = open(l, f, record(l, f, node.clone()), Some(node.clone()), None);
            o.needs_gone = true;
            {
                let mut w = l.world();
                w.overtaken(&node, "leave", l.workload_now());
                w.faults.push(o);
            }
            let _ = l.request(&node, Op::Leave, Duration::from_secs(2)).await;
            // The process stays in its slot while it leaves, so that the end of the run stops
            // it should it still be leaving then.
            let deadline = tokio::time::Instant::now() + LEAVE_WAIT;
            loop {
                let exited = l.slots().get_mut(&node).and_then(|s| s.running.as_mut()).map(|r| r.child.try_wait());
                match exited {
                    None => break, // the end of the run took it
                    Some(Ok(Some(status))) => {
                        if !status.success() {
                            l.note(format!("{node} did not leave cleanly: {status}"));
                        }
                        let _ = l.take_process(&node);
                        break;
                    }
                    Some(Ok(None)) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Some(Ok(None)) => {
                        l.note(format!("{node} did not leave within {LEAVE_WAIT:?}; killed"));
                        if let Some(mut running) = l.take_process(&node) {
                            let _ = running.child.start_kill();
                            let _ = running.child.wait().await;
                        }
                        break;
                    }
                    Some(Err(e)) => {
                        l.note(format!("{node}: waiting for it to leave: {e}"));
                        break;
                    }
                }
            }
            let mut w = l.world();
            if let Some(n) = w.nodes.get_mut(&node) {
                n.proc = Proc::Left;
            }
            for on in w.hosts.values_mut() {
                on.remove(&node);
            }
        }
    }
}

/// SIGCONT for a stopped node.
pub fn resume(l: &Launcher, node: &str) {
    if let Some(pid) = l.pid_of(node) {
        signal(pid, Signal::SIGCONT);
    }
    let now = l.workload_now();
    if let Some(n) = l.world().nodes.get_mut(node) {
        if n.proc == Proc::Stopped {
            n.proc = Proc::Up;
            n.back_at = Some(now);
        }
    }
}
