//! Significant children and the supervisor's auto_shutdown rule.
mod common;

use common::*;
use warden::prelude::*;
use warden::testkit::EventProbe;

fn sig(id: &str) -> WorkerSpec<Msg> {
    ChildSpec::worker(id, Worker::named("s"), ()).restart(RestartType::Transient).significant(true)
}

fn shut_down(e: &SupervisorEvent) -> bool {
    matches!(e, SupervisorEvent::SupervisorShutdown { .. })
}

#[tokio::test]
async fn any_significant_shuts_down_when_one_exits_for_good() {
    let (a, b) = (sig("a"), sig("b"));
    let ha = a.handle();
    let spec = SupervisorSpec::one_for_one().auto_shutdown(AutoShutdown::AnySignificant).child(a).child(b);
    let app = Supervisor::start("any_sig", spec).await.unwrap();
    let mut probe = EventProbe::new(&app);
    ha.cast(Msg::Exit(None)).unwrap();
    let e = probe.wait_for(DEADLINE, shut_down).await.unwrap();
    assert!(
        matches!(e, SupervisorEvent::SupervisorShutdown { reason: ExitReason::Shutdown(Some(ref d)), .. } if d.contains("auto_shutdown"))
    );
    app.wait().await;
}

#[tokio::test]
async fn a_significant_child_that_is_restarted_does_not_shut_down() {
    let a = sig("a");
    let ha = a.handle();
    let spec = SupervisorSpec::one_for_one().auto_shutdown(AutoShutdown::AnySignificant).child(a);
    let app = Supervisor::start("sig_restarted", spec).await.unwrap();
    let mut probe = EventProbe::new(&app);
    ha.cast(Msg::Panic).unwrap();
    probe.restarted(&ha.path(), DEADLINE).await.unwrap();
    assert!(app.is_running());
    app.shutdown().await;
}

#[tokio::test]
async fn all_significant_waits_for_the_last_one() {
    let (a, b) = (sig("a"), sig("b"));
    let (ha, hb) = (a.handle(), b.handle());
    let other = ChildSpec::worker("other", Worker::named("o"), ());
    let spec = SupervisorSpec::one_for_one().auto_shutdown(AutoShutdown::AllSignificant).child(a).child(b).child(other);
    let app = Supervisor::start("all_sig", spec).await.unwrap();
    let mut probe = EventProbe::new(&app);
    ha.cast(Msg::Exit(None)).unwrap();
    probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::ChildExited { .. })).await.unwrap();
    assert_eq!(app.count_children().await.unwrap().active, 2, "still up after the first");
    hb.cast(Msg::Exit(None)).unwrap();
    probe.wait_for(DEADLINE, shut_down).await.unwrap();
    app.wait().await;
}

#[tokio::test]
async fn never_ignores_significant_children() {
    let a = sig("a");
    let ha = a.handle();
    let app = Supervisor::start("never_sig", SupervisorSpec::one_for_one().child(a)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    ha.cast(Msg::Exit(None)).unwrap();
    probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::ChildExited { .. })).await.unwrap();
    assert!(app.count_children().await.is_ok());
    app.shutdown().await;
}
