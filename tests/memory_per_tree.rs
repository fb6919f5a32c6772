//! What an idle supervision tree costs in memory: a program that runs thousands of small
//! trees (a cluster node runs one per singleton it hosts) must not pay for buffers nobody
//! reads. Each tree here is a root supervisor with one worker and no event subscriber; the
//! test measures the process's resident memory before and after starting them.
//!
//! Alone in its test binary, so no other test allocates meanwhile.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use warden::prelude::*;

/// Trees started.
const TREES: usize = 1_000;
/// The most resident memory one idle tree may add (a supervisor, a worker, their tasks and
/// bookkeeping). The event bus used to allocate its whole broadcast buffer up front, about
/// 380 KiB per tree.
const MAX_BYTES_PER_TREE: usize = 64 * 1024;

#[derive(Clone)]
struct Idle;

impl Actor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// Resident bytes of this process (Linux: `/proc/self/statm`, in pages).
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("resident pages");
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tree_without_subscribers_costs_little_memory() {
    // Warm up the runtime, the allocator and the registries with a few trees first.
    let mut trees = Vec::with_capacity(TREES + 10);
    for i in 0..10 {
        let spec = SupervisorSpec::one_for_one().child(ChildSpec::worker("w", Idle, ()));
        trees.push(Supervisor::start(&format!("mem-warm-{i}"), spec).await.expect("starts"));
    }
    let before = resident_bytes();
    for i in 0..TREES {
        let spec = SupervisorSpec::one_for_one().child(ChildSpec::worker("w", Idle, ()));
        trees.push(Supervisor::start(&format!("mem-tree-{i}"), spec).await.expect("starts"));
    }
    let per_tree = resident_bytes().saturating_sub(before) / TREES;
    assert!(
        per_tree <= MAX_BYTES_PER_TREE,
        "an idle tree adds {per_tree} bytes of resident memory (at most {MAX_BYTES_PER_TREE})"
    );
    for t in trees {
        t.shutdown().await;
    }
}
