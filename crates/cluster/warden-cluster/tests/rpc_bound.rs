//! The RPC actor's bound, `network::MAX_CONCURRENT_REQUESTS`, driven to its limit: while a
//! node's disk stalls, the proposals it is asked to commit cannot finish, so every request
//! holds its slot; more requests than the bound, sent at once, get `CallError::Busy` at once
//! for the ones past it, and the rest are answered: committed once the disk is back, or, for
//! those whose write outlived the leader's hold on it (`appender::SLOT_HOLD`, shorter than the
//! stall), `NotDone::NoAnswer` ("perhaps committed"). One real node that
//! founds its own group; the requests go to its real RPC actor (found in its process group,
//! as another node's would).

use std::time::{Duration, Instant};

use warden_cluster::ledger::Command;
use warden_cluster::raft::network::{self, CallError, NotDone, Reply, Request, MAX_CONCURRENT_REQUESTS};
use warden_cluster::raft::Batch;
use warden_cluster::{Node, NodeConfig};

/// Requests past the bound.
const EXTRA: usize = 40;
/// How long the disk stalls: the first requests hold their slots that long.
const STALL: Duration = Duration::from_secs(5);
/// How long any one call may wait (well past the stall).
const CALL_WAIT: Duration = Duration::from_secs(60);

fn harmless() -> Vec<Command> {
    vec![Command::Register { singletons: Vec::new() }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_bound_are_answered_busy_at_once_and_the_rest_are_served() {
    let dir = tempfile::tempdir().expect("a dir");
    let node = Node::start(NodeConfig::new("rpc-bound-a", "rpc-bound-test").data_dir(dir.path()).found(), vec![])
        .await
        .expect("the node starts");
    let by = Instant::now() + CALL_WAIT;
    while node.propose(harmless()).await.is_err() {
        assert!(Instant::now() < by, "the node did not lead within {CALL_WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    node.stall_disk(STALL);
    let me = node.id();
    let calls: Vec<_> = (0..MAX_CONCURRENT_REQUESTS + EXTRA)
        .map(|_| {
            tokio::spawn(async move {
                let request = Request::Propose(Batch(harmless()));
                let sent = Instant::now();
                (network::call(me, &request, CALL_WAIT).await, sent.elapsed())
            })
        })
        .collect();
    // Served: committed, or answered NoAnswer once the write outlived the hold.
    let (mut busy, mut committed, mut other) = (0, 0, Vec::new());
    for call in calls {
        match call.await.expect("the call's task") {
            (Err(CallError::Busy(n)), waited) => {
                assert_eq!(n, me);
                assert!(waited < STALL, "a busy answer waited {waited:?}, as long as the stall");
                busy += 1;
            }
            (Ok(Reply::Proposed(Ok(_) | Err(NotDone::NoAnswer(_)))), _) => committed += 1,
            (answer, _) => other.push(format!("{answer:?}")),
        }
    }
    assert!(other.is_empty(), "neither busy nor committed: {other:?}");
    // Requests from the node itself (its renewals) may hold a few slots too: at least EXTRA
    // are refused, and no more than the bound are served.
    assert!(busy >= EXTRA, "only {busy} of {} answered busy", MAX_CONCURRENT_REQUESTS + EXTRA);
    assert!(committed <= MAX_CONCURRENT_REQUESTS, "{committed} served at once, past the bound");
    assert!(committed > 0, "none served");
    node.stop().await;
}
