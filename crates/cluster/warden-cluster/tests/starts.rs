//! The host's bound on singleton starts: when more singletons are granted to a node at once
//! than `MAX_CONCURRENT_STARTS`, at most that many are starting at any time and the rest wait
//! their turn (none is refused or lost). One real node that founds its own group.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use warden_cluster::host::MAX_CONCURRENT_STARTS;
use warden_cluster::{Node, NodeConfig, SingletonContext, SingletonSpec};

/// More singletons than may start at once.
const SINGLETONS: usize = MAX_CONCURRENT_STARTS + 8;
/// How long the node may take to get that far (a bound, not a measurement).
const SETTLE: Duration = Duration::from_secs(60);

static STARTING: AtomicUsize = AtomicUsize::new(0);
static MOST_AT_ONCE: AtomicUsize = AtomicUsize::new(0);

/// An actor whose start waits until the test opens the gate.
#[derive(Clone)]
struct Slow {
    open: watch::Receiver<bool>,
}

impl Actor for Slow {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        let now = STARTING.fetch_add(1, Ordering::SeqCst) + 1;
        MOST_AT_ONCE.fetch_max(now, Ordering::SeqCst);
        let mut open = self.open.clone();
        let _ = open.wait_for(|o| *o).await;
        STARTING.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn until(what: &str, ok: impl Fn() -> bool) {
    let by = Instant::now() + SETTLE;
    while !ok() {
        assert!(Instant::now() < by, "not within {SETTLE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_concurrent_starts_singletons_start_at_once_and_the_rest_follow() {
    let (gate, open) = watch::channel(false);
    let specs = (0..SINGLETONS)
        .map(|i| {
            let open = open.clone();
            SingletonSpec::new(format!("slow-{i}"), move |_: &SingletonContext| (Slow { open: open.clone() }, ()))
        })
        .collect();
    let dir = tempfile::tempdir().expect("a dir");
    let node = Node::start(NodeConfig::new("starts-a", "starts-test").data_dir(dir.path()).found(), specs)
        .await
        .expect("the node founds");

    until("the first starts are under way", || STARTING.load(Ordering::SeqCst) >= MAX_CONCURRENT_STARTS).await;
    // Every singleton was granted here, so the others are waiting for a start slot.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(MOST_AT_ONCE.load(Ordering::SeqCst), MAX_CONCURRENT_STARTS, "more started at once than the bound");

    gate.send_replace(true);
    until("every singleton runs", || {
        (0..SINGLETONS).all(|i| node.locate::<()>(&format!("slow-{i}")).is_some_and(|s| s.is_local()))
    })
    .await;
    assert_eq!(MOST_AT_ONCE.load(Ordering::SeqCst), MAX_CONCURRENT_STARTS);
    node.stop().await;
}
