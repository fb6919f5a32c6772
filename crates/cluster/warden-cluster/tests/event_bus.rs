//! Each singleton's tree publishes on a bus of `SINGLETON_EVENT_CAPACITY` events, not the
//! core's default: a process that subscribes to every singleton it hosts (as the demo nodes
//! do, to forward restarts) pays a small buffer per singleton, and the events still arrive.
//! One real node that founds its own group.

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use warden_cluster::host::SINGLETON_EVENT_CAPACITY;
use warden_cluster::{Node, NodeConfig, SingletonContext, SingletonSpec};
use warden_core::testkit::EventProbe;
use warden_core::SupervisorEvent;

/// How long the node may take to place the singleton, and the restart to show (a bound).
const SETTLE: Duration = Duration::from_secs(30);

/// An actor that panics on every message.
#[derive(Clone)]
struct Brittle;

impl Actor for Brittle {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(&self, _: ActorRef<()>, _: (), _: &mut ()) -> Result<(), ActorProcessingErr> {
        panic!("brittle: asked to break");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_singletons_tree_has_a_small_event_bus_that_still_carries_its_restarts() {
    let specs = vec![SingletonSpec::new("brittle", |_: &SingletonContext| (Brittle, ()))];
    let dir = tempfile::tempdir().expect("a dir");
    let node = Node::start(NodeConfig::new("bus-a", "bus-test").data_dir(dir.path()).found(), specs)
        .await
        .expect("the node founds");
    let by = Instant::now() + SETTLE;
    let sup = loop {
        if let Some(sup) = node.supervisor("brittle") {
            break sup;
        }
        assert!(Instant::now() < by, "the singleton did not start within {SETTLE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(sup.events().capacity(), SINGLETON_EVENT_CAPACITY, "a singleton's bus has the core's default size");
    const { assert!(SINGLETON_EVENT_CAPACITY < warden_core::event::DEFAULT_EVENT_CAPACITY) };

    // The core's probe fails on a lag or a closed bus as well as on the deadline.
    let mut probe = EventProbe::new(&sup);
    node.locate::<()>("brittle").expect("placed here").cast(()).expect("sent");
    probe
        .wait_for(SETTLE, |e| matches!(e, SupervisorEvent::ChildRestarted { .. }))
        .await
        .expect("the restart arrives on the small bus");
    node.stop().await;
}
