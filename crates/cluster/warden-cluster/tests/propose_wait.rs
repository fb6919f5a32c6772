//! The proposer's wait bound, `PROPOSE_TIMEOUT`, driven to its limit: a node that leads a
//! group of one and whose disk stalls longer than the bound answers a proposal "perhaps
//! committed" (`Uncertain::NoCommit`) once the bound has passed, never sooner and never
//! "not committed"; when the disk comes back the node commits again. One real node that
//! founds its own group; the stall is the node's own (`Node::stall_disk`, the demos'
//! `slow-disk`).

use std::time::{Duration, Instant};

use warden_cluster::ledger::Command;
use warden_cluster::proposer::{ProposeError, Uncertain, PROPOSE_TIMEOUT};
use warden_cluster::{Node, NodeConfig};

/// How long the disk stalls: well past the bound, so the commit cannot come in time.
const STALL: Duration = Duration::from_secs(5);
/// How long the node may take to lead, and to commit after the stall (a bound, not a
/// measurement).
const SETTLE: Duration = Duration::from_secs(60);

/// A command every group takes and that changes nothing: no singletons to register.
fn harmless() -> Vec<Command> {
    vec![Command::Register { singletons: Vec::new() }]
}

async fn commits(node: &Node) {
    let by = Instant::now() + SETTLE;
    loop {
        match node.propose(harmless()).await {
            Ok(_) => return,
            Err(e) => assert!(Instant::now() < by, "no commit within {SETTLE:?}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_on_a_stalled_leader_is_uncertain_after_propose_timeout() {
    let dir = tempfile::tempdir().expect("a dir");
    let node = Node::start(NodeConfig::new("propose-wait-a", "propose-wait-test").data_dir(dir.path()).found(), vec![])
        .await
        .expect("the node starts");
    commits(&node).await;

    node.stall_disk(STALL);
    let asked = Instant::now();
    let answer = node.propose(harmless()).await;
    let waited = asked.elapsed();
    match answer {
        Err(ProposeError::Unknown(Uncertain::NoCommit(bound))) => assert_eq!(bound, PROPOSE_TIMEOUT),
        other => panic!("expected `Unknown(NoCommit)` from a stalled leader, got {other:?}"),
    }
    assert!(waited >= PROPOSE_TIMEOUT, "answered after {waited:?}, before the bound {PROPOSE_TIMEOUT:?}");

    // The stall ends and the node commits again.
    commits(&node).await;
    node.stop().await;
}
