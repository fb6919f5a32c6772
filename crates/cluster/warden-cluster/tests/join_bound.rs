//! The join bound driven to its limit: a node with no past told to join through an address
//! where no member listens gives up after its join timeout (`NodeConfig::join_timeout`,
//! `JOIN_TIMEOUT` unless set), never sooner, and fails to start with `ClusterError::Join`
//! naming the bound and what its last attempt got. One real node in its own test process.

use std::time::{Duration, Instant};

use warden_cluster::node::{JOIN_CALL_TIMEOUT, JOIN_TIMEOUT};
use warden_cluster::{ClusterError, JoinAttempt, Node, NodeConfig};

/// The bound under test: short, so the test does not wait the default 30 s.
const WITHIN: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_with_no_member_to_reach_fails_after_its_timeout() {
    assert_eq!(NodeConfig::new("x", "y").join_timeout, JOIN_TIMEOUT, "the default bound");
    // A port nothing listens on any more.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    let dir = tempfile::tempdir().expect("a dir");
    let config =
        NodeConfig::new("join-bound-a", "join-bound-test").data_dir(dir.path()).join(nobody).join_timeout(WITHIN);
    let started = Instant::now();
    // An outer bound, so a join that ignores its own fails here instead of hanging.
    let outcome = tokio::time::timeout(WITHIN * 10 + JOIN_CALL_TIMEOUT, Node::start(config, Vec::new()))
        .await
        .expect("the join gave up");
    let took = started.elapsed();
    let Err(err) = outcome else { panic!("a node joined through {nobody}, where nothing listens") };
    match &err {
        ClusterError::Join { name, within, last } => {
            assert_eq!(name, "join-bound-a");
            assert_eq!(*within, WITHIN);
            assert!(matches!(**last, JoinAttempt::NoMemberReachable | JoinAttempt::Call(_)), "{last:?}");
        }
        other => panic!("not a join error: {other:?}"),
    }
    assert!(took >= WITHIN, "gave up after {took:?}, before its {WITHIN:?}");
    assert!(err.to_string().contains("not added to the group within 2s"), "the message names the bound: {err}");
}
