//! Strategies: which children are stopped and started again, and in which order.
mod common;

use std::sync::{Arc, Mutex};

use common::*;
use warden::prelude::*;
use warden::testkit::EventProbe;

type Log = Arc<Mutex<Vec<String>>>;

fn three(log: &Log, strategy: SupervisorSpec) -> (SupervisorSpec, Vec<ChildRef<Msg>>) {
    let mut spec = strategy;
    let mut handles = Vec::new();
    for name in ["a", "b", "c"] {
        let c = ChildSpec::worker(name, Worker::logging(name, log), ());
        handles.push(c.handle());
        spec = spec.child(c);
    }
    (spec, handles)
}

async fn incarnations(hs: &[ChildRef<Msg>]) -> Vec<u64> {
    let mut out = Vec::new();
    for h in hs {
        out.push(incarnation(h).await);
    }
    out
}

#[tokio::test]
async fn children_start_in_list_order_and_stop_in_reverse() {
    let log = Log::default();
    let (spec, _) = three(&log, SupervisorSpec::one_for_one());
    let app = Supervisor::start("order", spec).await.unwrap();
    app.shutdown().await;
    assert_eq!(*log.lock().unwrap(), ["start a", "start b", "start c", "stop c", "stop b", "stop a"]);
}

#[tokio::test]
async fn one_for_one_restarts_only_the_failed_child() {
    let log = Log::default();
    let (spec, hs) = three(&log, SupervisorSpec::one_for_one());
    let app = Supervisor::start("ofo", spec).await.unwrap();
    let mut probe = EventProbe::new(&app);
    hs[1].cast(Msg::Panic).unwrap();
    probe.restarted(&hs[1].path(), DEADLINE).await.unwrap();
    assert_eq!(incarnations(&hs).await, [1, 2, 1]);
    app.shutdown().await;
}

#[tokio::test]
async fn one_for_all_restarts_every_child_stopping_in_reverse_and_starting_in_order() {
    let log = Log::default();
    let (spec, hs) = three(&log, SupervisorSpec::one_for_all());
    let app = Supervisor::start("ofa", spec).await.unwrap();
    let mut probe = EventProbe::new(&app);
    log.lock().unwrap().clear();
    hs[1].cast(Msg::Panic).unwrap();
    probe.restarted(&hs[2].path(), DEADLINE).await.unwrap();
    assert_eq!(incarnations(&hs).await, [2, 2, 2]);
    // b crashed (no post_stop after a panic); c then a stop gracefully; all start in order.
    assert_eq!(*log.lock().unwrap(), ["stop c", "stop a", "start a", "start b", "start c"]);
    app.shutdown().await;
}

#[tokio::test]
async fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
    let log = Log::default();
    let (spec, hs) = three(&log, SupervisorSpec::rest_for_one());
    let app = Supervisor::start("rfo", spec).await.unwrap();
    let mut probe = EventProbe::new(&app);
    log.lock().unwrap().clear();
    hs[1].cast(Msg::Panic).unwrap();
    probe.restarted(&hs[2].path(), DEADLINE).await.unwrap();
    assert_eq!(incarnations(&hs).await, [1, 2, 2]);
    assert_eq!(*log.lock().unwrap(), ["stop c", "start b", "start c"]);
    // The last child failing touches no one else.
    hs[2].cast(Msg::Panic).unwrap();
    probe.restarted(&hs[2].path(), DEADLINE).await.unwrap();
    assert_eq!(incarnations(&hs).await, [1, 2, 3]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_temporary_bystander_is_forgotten_in_a_group_restart() {
    let log = Log::default();
    let a = ChildSpec::worker("a", Worker::logging("a", &log), ());
    let t = ChildSpec::worker("t", Worker::logging("t", &log), ()).restart(RestartType::Temporary);
    let ha = a.handle();
    let ht = t.handle();
    let app = Supervisor::start("ofa_temp", SupervisorSpec::one_for_all().child(a).child(t)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    ha.cast(Msg::Panic).unwrap();
    probe.restarted(&ha.path(), DEADLINE).await.unwrap();
    let ids: Vec<String> = app.which_children().await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["a"]);
    assert!(ht.cast(Msg::Add(1)).is_err(), "the forgotten child hands messages back");
    app.shutdown().await;
}

#[tokio::test]
async fn a_group_restart_also_starts_children_that_were_terminated() {
    // As in OTP: one_for_all starts every non-temporary child again.
    let log = Log::default();
    let (spec, hs) = three(&log, SupervisorSpec::one_for_all());
    let app = Supervisor::start("ofa_terminated", spec).await.unwrap();
    let mut probe = EventProbe::new(&app);
    app.terminate_child("c").await.unwrap();
    hs[0].cast(Msg::Panic).unwrap();
    probe.restarted(&hs[2].path(), DEADLINE).await.unwrap();
    assert_eq!(incarnations(&hs).await, [2, 2, 2]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_transient_normal_exit_does_not_restart_the_group() {
    let log = Log::default();
    let a = ChildSpec::worker("a", Worker::logging("a", &log), ()).restart(RestartType::Transient);
    let b = ChildSpec::worker("b", Worker::logging("b", &log), ());
    let (ha, hb) = (a.handle(), b.handle());
    let app = Supervisor::start("ofa_transient", SupervisorSpec::one_for_all().child(a).child(b)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    ha.cast(Msg::Exit(None)).unwrap();
    probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::ChildExited { .. })).await.unwrap();
    assert_eq!(incarnation(&hb).await, 1);
    let kids = app.which_children().await.unwrap();
    assert_eq!(kids[0].status, warden::ChildStatus::Stopped);
    app.shutdown().await;
}

#[tokio::test]
async fn children_of_different_actor_types_live_under_one_supervisor() {
    #[derive(Clone)]
    struct Greeter;
    struct Greet(ractor::RpcReplyPort<String>);
    impl ractor::Actor for Greeter {
        type Msg = Greet;
        type State = String;
        type Arguments = String;
        async fn pre_start(
            &self,
            _: ractor::ActorRef<Self::Msg>,
            name: String,
        ) -> Result<String, ractor::ActorProcessingErr> {
            Ok(name)
        }
        async fn handle(
            &self,
            _: ractor::ActorRef<Self::Msg>,
            Greet(reply): Self::Msg,
            name: &mut String,
        ) -> Result<(), ractor::ActorProcessingErr> {
            let _ = reply.send(format!("hello from {name}"));
            Ok(())
        }
    }
    let g = ChildSpec::worker("greeter", Greeter, "g".to_string());
    let w = ChildSpec::worker("worker", Worker::named("w"), ());
    let (hg, hw) = (g.handle(), w.handle());
    assert!(g.spec().handle::<Msg>().is_none(), "an erased spec refuses a handle of the wrong message type");
    let app = Supervisor::start("mixed", SupervisorSpec::one_for_one().child(g).child(w)).await.unwrap();
    assert_eq!(hg.call(Greet, Some(DEADLINE)).await.unwrap(), "hello from g");
    assert_eq!(incarnation(&hw).await, 1);
    app.shutdown().await;
}
