//! Remote monitoring against a real node process: a watched actor on another node reports its
//! exit while its node lives, and another reports its node's death; the watches and the
//! names of sessions are bounded. A binary of its own: nodes
//! in one process share the process-wide heartbeat group, so these tests do not share a process
//! with other node tests.
//!
//! The peer node is this test binary run again (see `support`).

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use warden_cluster::{NodeEvent, RemoteDown, Transport, TransportConfig, HEARTBEAT_GROUP};

mod support;
use support::*;

/// The peer process (see `support`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the peer process of the node tests"]
async fn peer_node() {
    run_peer_node().await;
}

/// The first remote member of `group`, waiting for it to appear.
async fn remote_member(group: &str) -> ractor::ActorCell {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(c) = ractor::pg::get_members(&group.to_string()).into_iter().find(|c| !c.get_id().is_local()) {
            return c;
        }
        assert!(tokio::time::Instant::now() < until, "no remote member of {group}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_remote_actor_reports_its_exit_and_its_nodes_death() {
    let mut config = TransportConfig::new("watcher-2", "test-cookie");
    config.max_watches = 2;
    let watcher = Transport::start(config).await.unwrap();
    let mut events = watcher.subscribe();
    let peer = spawn_peer_with("host", watcher.addr(), Some(1500));
    assert!(wait_for(&mut events, |e| matches!(e, NodeEvent::Up { peer, .. } if peer == "host")).await.is_some());
    // Watches are bounded, and a watch whose receiver is dropped goes (issue 15).
    let receiver = remote_member(HEARTBEAT_GROUP).await;
    let (first, second) =
        (watcher.watch(receiver.clone()).await.unwrap(), watcher.watch(receiver.clone()).await.unwrap());
    let refused = watcher.watch(receiver).await.expect_err("a third watch is past the bound");
    assert!(refused.to_string().contains("2 remote actors are watched already"), "{refused}");
    assert_eq!(watcher.watches(), 2);
    drop((first, second));
    let until = tokio::time::Instant::now() + DEADLINE;
    while watcher.watches() > 0 {
        assert!(tokio::time::Instant::now() < until, "dropped watches are never removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The short-lived actor exits while its node lives on.
    let target = remote_member(TARGETS).await;
    let exited = tokio::time::timeout(DEADLINE, watcher.watch(target).await.unwrap()).await.expect("in time").unwrap();
    assert!(matches!(&exited, RemoteDown::Exited { node, .. } if node == "host"), "{exited:?}");
    // Its heartbeat receiver goes with its node.
    let receiver = remote_member(HEARTBEAT_GROUP).await;
    let gone = watcher.watch(receiver.clone()).await.unwrap();
    assert_eq!(
        watcher.view().node_of(&receiver).as_deref(),
        Some("host"),
        "the session's name is known while it lives"
    );
    kill(Pid::from_raw(peer.0.id() as i32), Signal::SIGKILL).unwrap();
    let why = tokio::time::timeout(DEADLINE, gone).await.expect("in time").unwrap();
    assert!(
        matches!(&why, RemoteDown::NodeDown { node, .. } | RemoteDown::Exited { node, .. } if node == "host"),
        "{why:?}"
    );
    // The session-name registry is bounded by the live sessions: the dead one's entry goes.
    let until = tokio::time::Instant::now() + DEADLINE;
    while watcher.view().node_of(&receiver).is_some() {
        assert!(tokio::time::Instant::now() < until, "an ended session's name is never forgotten");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Local actors are not for watching.
    let local =
        ractor::pg::get_members(&HEARTBEAT_GROUP.to_string()).into_iter().find(|c| c.get_id().is_local()).unwrap();
    assert!(watcher.watch(local).await.is_err());
}
