//! The leave bound driven to its limit: a node that leads a group of one and whose disk stalls
//! longer than its leave timeout (`NodeConfig::leave_timeout`, `LEAVE_TIMEOUT` unless set)
//! cannot commit its drain, so its orderly leave gives up after the bound, never sooner, with
//! `ClusterError::Leave` carrying why (`LeaveFailure`); the node is stopped either way. One real
//! node that founds its own group; the stall is the node's own (`Node::stall_disk`, the demos'
//! `slow-disk`).

use std::time::{Duration, Instant};

use warden_cluster::ledger::Command;
use warden_cluster::node::LEAVE_TIMEOUT;
use warden_cluster::proposer::ProposeError;
use warden_cluster::{ClusterError, LeaveFailure, Node, NodeConfig};

/// The bound under test: short, so the test does not wait the default 30 s.
const WITHIN: Duration = Duration::from_secs(2);
/// How long the disk stalls: well past the bound, so no drain can commit in time.
const STALL: Duration = Duration::from_secs(10);
/// How long the node may take to lead (a bound, not a measurement).
const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_whose_drain_cannot_commit_gives_up_after_its_leave_timeout() {
    assert_eq!(NodeConfig::new("x", "y").leave_timeout, LEAVE_TIMEOUT, "the default bound");
    let dir = tempfile::tempdir().expect("a dir");
    let config =
        NodeConfig::new("leave-bound-a", "leave-bound-test").data_dir(dir.path()).found().leave_timeout(WITHIN);
    let node = Node::start(config, Vec::new()).await.expect("founds a group of one");
    // It leads and commits before the stall.
    let by = Instant::now() + SETTLE;
    while let Err(e) = node.propose(vec![Command::Register { singletons: Vec::new() }]).await {
        assert!(Instant::now() < by, "no commit within {SETTLE:?}: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    node.stall_disk(STALL);
    let started = Instant::now();
    // An outer bound, so a leave that ignores its own fails here instead of hanging. (The
    // leave returns once the node has stopped, which waits for the stalled write.)
    let outcome = tokio::time::timeout(STALL + SETTLE, node.leave()).await.expect("the leave gave up");
    let took = started.elapsed();
    let Err(err) = outcome else { panic!("left although no drain could commit") };
    match &err {
        ClusterError::Leave { name, cause } => {
            assert_eq!(name, "leave-bound-a");
            match &**cause {
                // The drain's commit never came (perhaps committed), or it was never taken.
                LeaveFailure::Drain(ProposeError::Unknown(_) | ProposeError::NotSent(_)) => {}
                LeaveFailure::StillMember { within, .. } => assert_eq!(*within, WITHIN),
            }
        }
        other => panic!("not a leave error: {other:?}"),
    }
    assert!(took >= WITHIN, "gave up after {took:?}, before its {WITHIN:?}");
    // It gave up at its own bound, not at the default one. (The leave returns once the node
    // stopped, which waits out the stalled write: up to STALL, far below LEAVE_TIMEOUT.)
    assert!(took < LEAVE_TIMEOUT, "took {took:?}: the {WITHIN:?} bound was not the one applied");
}
