//! Reliability figures: failure count and rate, MTBF, MTTR and availability per path and per
//! subtree, measured on the supervisor's clock (paused here, so the figures are exact).
mod common;

use std::time::Duration;

use common::*;
use warden::prelude::*;
use warden::testkit::EventProbe;

#[tokio::test(start_paused = true)]
async fn mtbf_mttr_and_availability_of_a_child_and_its_subtree() {
    let s = Duration::from_secs;
    let flaky =
        ChildSpec::worker("flaky", Worker::named("flaky"), ()).backoff(Backoff::exponential(s(2), s(2)).jitter(false));
    let h = flaky.handle();
    let steady = ChildSpec::worker("steady", Worker::named("steady"), ());
    let inner = SupervisorSpec::one_for_one().intensity(10, s(60)).child(flaky).child(steady);
    let app = Supervisor::start("rel", SupervisorSpec::one_for_one().child(ChildSpec::supervisor("svc", inner)))
        .await
        .unwrap();
    let mut probe = EventProbe::new(&app);
    for _ in 0..2 {
        tokio::time::sleep(s(100)).await;
        h.cast(Msg::Panic).unwrap();
        probe.restarted(&h.path(), DEADLINE).await.unwrap();
    }
    let f = app.stats("/rel/svc/flaky").expect("figures for the flaky child");
    assert_eq!(f.failures, 2);
    assert_eq!(f.failure_rate_per_hour, 2.0);
    // Up 100 s, down 2 s (the backoff), twice.
    let mtbf = f.mtbf_s.unwrap();
    let mttr = f.mttr_s.unwrap();
    assert!((mtbf - 100.0).abs() < 0.1, "{f:?}");
    assert!((mttr - 2.0).abs() < 0.01, "{f:?}");
    assert!((f.availability - mtbf / (mtbf + mttr)).abs() < 1e-9);
    let steady = app.stats("/rel/svc/steady").unwrap();
    assert_eq!((steady.failures, steady.availability), (0, 1.0));
    let sub = app.subtree_stats("/rel/svc");
    assert_eq!(sub.failures, 2);
    assert!(sub.availability > f.availability, "the steady sibling raises the subtree's availability");
    app.shutdown().await;
}

#[tokio::test]
async fn dynamic_children_are_counted_under_their_spec() {
    let app = Supervisor::start("rel_dyn", SupervisorSpec::dynamic(None)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    let mut handles = Vec::new();
    for _ in 0..3 {
        let spec = ChildSpec::worker("conn", Worker::named("conn"), ());
        handles.push(spec.handle());
        app.start_child(spec).await.unwrap();
    }
    for h in &handles {
        h.cast(Msg::Fail).unwrap();
        probe.restarted(&h.path(), DEADLINE).await.unwrap();
    }
    assert_eq!(app.stats("/rel_dyn/conn").map(|f| f.failures), Some(3));
    assert!(app.stats("/rel_dyn/conn-1").is_none(), "no per-instance series");
    app.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failure_that_is_not_repaired_does_not_count_as_endless_repair() {
    let s = Duration::from_secs;
    let temp = ChildSpec::worker("temp", Worker::named("temp"), ()).restart(RestartType::Temporary);
    let h = temp.handle();
    let app = Supervisor::start("rel_temp", SupervisorSpec::one_for_one().child(temp)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    tokio::time::sleep(s(10)).await;
    h.cast(Msg::Fail).unwrap();
    probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::ChildExited { .. })).await.unwrap();
    app.count_children().await.unwrap();
    tokio::time::sleep(s(100)).await;
    let f = app.stats("/rel_temp/temp").unwrap();
    assert_eq!(f.failures, 1);
    assert!(f.repair_s < 1.0, "a temporary child is not being repaired: {f:?}");
    assert!((f.up_s - 10.0).abs() < 0.1, "{f:?}");
    app.shutdown().await;
}
