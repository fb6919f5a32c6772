//! The world's bookkeeping, with made-up reports.

use super::*;
use crate::demo::plan::NodeRef;
use crate::demo::protocol::Report;

fn world(nodes: &[&str]) -> World {
    let mut w = World::default();
    for (i, n) in nodes.iter().enumerate() {
        w.apply(n, &Report::Ready { node: n.to_string(), addr: String::new(), pid: 1, id: i as u64 + 1 }, 0);
        w.nodes.get_mut(*n).unwrap().back_at = None;
    }
    w
}

fn started(w: &mut World, node: &str, name: &str, token: u64, now: u64) {
    w.apply(
        node,
        &Report::Cluster { node: node.into(), event: ClusterEvent::Started { name: name.into(), token } },
        now,
    );
}

fn down(w: &mut World, reporter: &str, peer: &str, now: u64) {
    w.apply(
        reporter,
        &Report::Peer {
            node: reporter.into(),
            event: NodeEvent::Down {
                peer: peer.into(),
                cause: warden_cluster::DownCause::SessionClosed,
                silent_for: std::time::Duration::ZERO,
            },
        },
        now,
    );
}

fn open(action: Action, node: Option<&str>, displaced: &[&str]) -> Open {
    Open {
        rec: FaultRecord { kind: action.kind().into(), ..FaultRecord::default() },
        action,
        node: node.map(str::to_string),
        actor: None,
        injected: 0,
        displaced: displaced.iter().map(|s| s.to_string()).collect(),
        minority: BTreeSet::new(),
        key_displaced: false,
        must_serve: BTreeSet::new(),
        needs_success: true,
        needs_gone: false,
    }
}

#[test]
fn a_killed_node_is_detected_by_a_peer_and_recovered_once_its_singletons_run_again_and_a_request_succeeded() {
    let mut w = world(&["n1", "n2", "n3"]);
    started(&mut w, "n2", "auditor", 5, 10);
    w.faults.push(open(Action::Kill(NodeRef::Named("n2".into())), Some("n2"), &["auditor"]));
    w.nodes.get_mut("n2").unwrap().proc = Proc::Killed;
    down(&mut w, "n1", "n2", 100);
    assert_eq!(w.faults[0].rec.detected_at_ms, Some(100));
    assert_eq!(w.false_suspicions, 0);
    w.settle(150, Some(120));
    assert_eq!(w.faults[0].rec.recovered_at_ms, None, "the auditor is not back yet");
    started(&mut w, "n3", "auditor", 9, 900);
    assert_eq!(w.faults[0].rec.moved, vec!["auditor -> n3".to_string()]);
    w.settle(950, Some(120));
    assert_eq!(w.faults[0].rec.recovered_at_ms, Some(950), "back, and a request succeeded after the detection");
}

#[test]
fn a_suspicion_no_fault_explains_is_counted_and_one_across_a_cut_is_not() {
    let mut w = world(&["n1", "n2", "n3"]);
    down(&mut w, "n1", "n2", 20_000);
    assert_eq!(w.false_suspicions, 1);
    w.cut = Some(Cut::Sides(vec!["n1".into()], vec!["n3".into()]));
    down(&mut w, "n1", "n3", 21_000);
    assert_eq!(w.false_suspicions, 1);
    // A node back from a fault has a stale view for a while.
    w.nodes.get_mut("n2").unwrap().back_at = Some(25_000);
    down(&mut w, "n2", "n3", 26_000);
    assert_eq!(w.false_suspicions, 1);
}

#[test]
fn a_pool_workers_fault_is_followed_by_its_replicas_crash_and_restart() {
    let mut w = world(&["n1", "n2", "n3"]);
    let mut f = open(Action::Panic(ActorTarget::Worker("n2".into())), None, &[]);
    f.actor = Some(ActorTarget::Worker("n2".into()));
    w.faults.push(f);
    let crash = |node: &str| Report::Crash {
        node: node.into(),
        actor: "r1".into(),
        kind: "panic".into(),
        reason: "injected fault: panic".into(),
    };
    w.apply("n1", &crash("n1"), 10);
    assert_eq!(w.faults[0].rec.detected_at_ms, None, "another node's replica");
    w.apply("n2", &crash("n2"), 20);
    assert_eq!(w.faults[0].rec.detected_at_ms, Some(20));
    w.apply("n2", &Report::Restarted { node: "n2".into(), actor: "r1".into() }, 30);
    assert_eq!(w.faults[0].rec.recovered_at_ms, Some(30));
}

#[test]
fn a_wiped_node_is_detected_when_it_comes_back_under_a_new_id_and_recovered_when_it_serves() {
    let mut w = world(&["n1", "n2", "n3"]);
    let mut f = open(Action::Wipe(NodeRef::Named("n3".into())), Some("n3"), &[]);
    f.must_serve.insert("n3".into());
    w.faults.push(f);
    w.apply("n3", &Report::Ready { node: "n3".into(), addr: String::new(), pid: 2, id: 77 }, 500);
    assert_eq!(w.faults[0].rec.detected_at_ms, Some(500));
    w.settle(600, Some(550));
    assert_eq!(w.faults[0].rec.recovered_at_ms, None);
    w.apply("n3", &Report::Cluster { node: "n3".into(), event: ClusterEvent::Serving }, 2000);
    w.settle(2010, Some(550));
    assert_eq!(w.faults[0].rec.recovered_at_ms, Some(2010));
    assert_eq!(w.name_of(77).as_deref(), Some("n3"));
}

#[test]
fn a_hang_overtaken_by_a_handoff_is_closed_by_the_stop_and_the_start_elsewhere() {
    let mut w = world(&["n1", "n2", "n3"]);
    started(&mut w, "n1", "register", 4, 10);
    let mut hang = open(Action::Hang(ActorTarget::Singleton("register".into())), None, &[]);
    hang.actor = Some(ActorTarget::Singleton("register".into()));
    hang.needs_success = false;
    w.faults.push(hang);
    // The instance is handed off before its deadline: no hung report will come.
    w.apply(
        "n1",
        &Report::Cluster { node: "n1".into(), event: ClusterEvent::HandedOff { name: "register".into() } },
        100,
    );
    assert_eq!(w.faults[0].rec.detected_at_ms, Some(100));
    assert!(w.faults[0].rec.note.contains("stopped"), "{}", w.faults[0].rec.note);
    assert_eq!(w.faults[0].rec.recovered_at_ms, None);
    started(&mut w, "n2", "register", 9, 150);
    assert_eq!(w.faults[0].rec.recovered_at_ms, Some(150));
}

#[test]
fn a_fault_armed_on_a_node_that_is_then_killed_counts_as_overtaken() {
    let mut w = world(&["n1", "n2", "n3"]);
    started(&mut w, "n2", "results", 3, 5);
    for actor in ["worker@n2", "results", "worker@n3"] {
        let mut f = open(Action::Panic(ActorTarget::parse(actor)), None, &[]);
        f.actor = Some(ActorTarget::parse(actor));
        f.needs_success = false;
        w.faults.push(f);
    }
    w.overtaken("n2", "wipe", 100);
    let (worker, singleton, elsewhere) = (&w.faults[0].rec, &w.faults[1].rec, &w.faults[2].rec);
    assert_eq!((worker.detected_at_ms, worker.recovered_at_ms), (Some(100), Some(100)));
    assert!(worker.note.contains("wipe of n2"), "{}", worker.note);
    assert_eq!((singleton.detected_at_ms, singleton.recovered_at_ms), (Some(100), None));
    assert_eq!(elsewhere.detected_at_ms, None, "a fault armed on another node is not touched");
    started(&mut w, "n1", "results", 8, 300);
    assert_eq!(w.faults[1].rec.recovered_at_ms, Some(300));
}

#[test]
fn the_launchers_log_keeps_the_newest_log_lines() {
    let mut w = world(&["n1"]);
    let before = w.log.len();
    for i in 0..LOG_LINES + 1 {
        w.note(format!("line {i}"));
    }
    assert_eq!(w.log.len(), LOG_LINES);
    assert_eq!(w.log.front().map(String::as_str), Some("line 1"), "the oldest went ({before} lines before)");
    assert_eq!(w.log.back().map(String::as_str), Some(format!("line {LOG_LINES}").as_str()));
}
