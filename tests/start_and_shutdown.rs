//! Synchronous start with rollback, and shutdown by each child's policy.
mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use warden::prelude::*;
use warden::testkit::EventProbe;
use warden::{EventBus, StartError};

type Log = Arc<Mutex<Vec<String>>>;

#[tokio::test]
async fn a_child_failing_to_start_stops_the_started_ones_in_reverse_and_names_itself() {
    let log = Log::default();
    let bad = Worker::logging("c", &log);
    bad.fail_starts.store(1, Ordering::SeqCst);
    let spec = SupervisorSpec::one_for_one()
        .child(ChildSpec::worker("a", Worker::logging("a", &log), ()))
        .child(ChildSpec::worker("b", Worker::logging("b", &log), ()))
        .child(ChildSpec::worker("c", bad, ()))
        .child(ChildSpec::worker("d", Worker::logging("d", &log), ()));
    let err = Supervisor::start("rollback", spec).await.unwrap_err();
    match &err {
        StartError::Failed { path, cause } => {
            assert_eq!(path.as_str(), "/rollback/c");
            assert!(cause.contains("c refuses to start"), "{cause}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(*log.lock().unwrap(), ["start a", "start b", "stop b", "stop a"]);
}

#[tokio::test]
async fn a_panic_in_pre_start_fails_the_start_with_the_panic_message() {
    #[derive(Clone)]
    struct Bomb;
    impl ractor::Actor for Bomb {
        type Msg = ();
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ractor::ActorRef<()>, _: ()) -> Result<(), ractor::ActorProcessingErr> {
            panic!("no database");
        }
    }
    let err = Supervisor::start("bomb", SupervisorSpec::one_for_one().child(ChildSpec::worker("bomb", Bomb, ())))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("/bomb/bomb") && text.contains("no database"), "{text}");
}

#[tokio::test]
async fn invalid_specs_are_refused_before_anything_starts() {
    let dup = SupervisorSpec::one_for_one()
        .child(ChildSpec::worker("x", Worker::named("x"), ()))
        .child(ChildSpec::worker("x", Worker::named("x"), ()));
    assert!(
        matches!(Supervisor::start("dup", dup).await, Err(StartError::Spec(warden::SpecError::DuplicateId(id))) if id == "x")
    );
    let slash = SupervisorSpec::one_for_one().child(ChildSpec::worker("a/b", Worker::named("x"), ()));
    assert!(matches!(Supervisor::start("slash", slash).await, Err(StartError::Spec(warden::SpecError::BadId(_)))));
    let sig = SupervisorSpec::one_for_one().child(ChildSpec::worker("s", Worker::named("s"), ()).significant(true));
    assert!(matches!(
        Supervisor::start("sig", sig).await,
        Err(StartError::Spec(warden::SpecError::SignificantPermanent(_)))
    ));
    let dynamic = SupervisorSpec::dynamic(None).child(ChildSpec::worker("x", Worker::named("x"), ()));
    assert!(matches!(
        Supervisor::start("dyn", dynamic).await,
        Err(StartError::Spec(warden::SpecError::DynamicWithChildren))
    ));
    assert!(Supervisor::start("", SupervisorSpec::one_for_one()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_child_that_ignores_stop_is_killed_after_its_shutdown_timeout() {
    let log = Log::default();
    let stubborn = Worker { ignore_stop: true, ..Worker::logging("stubborn", &log) };
    let spec = SupervisorSpec::one_for_one()
        .child(ChildSpec::worker("polite", Worker::logging("polite", &log), ()))
        .child(ChildSpec::worker("stubborn", stubborn, ()).shutdown(Shutdown::Timeout(Duration::from_secs(2))));
    let events = EventBus::default();
    let mut probe = EventProbe::from_receiver(events.subscribe());
    let app = Supervisor::start_with_events("stubborn", spec, events).await.unwrap();
    let t0 = tokio::time::Instant::now();
    app.shutdown().await;
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(3), "waited {waited:?}");
    let terminated: Vec<(String, bool)> = probe
        .drain()
        .iter()
        .filter_map(|e| match e {
            SupervisorEvent::ChildTerminated { path, killed } => Some((path.to_string(), *killed)),
            _ => None,
        })
        .collect();
    assert_eq!(terminated, [("/stubborn/stubborn".to_string(), true), ("/stubborn/polite".to_string(), false)]);
    // The stubborn one never finished post_stop; the polite one did, after it.
    assert_eq!(*log.lock().unwrap(), ["start polite", "start stubborn", "stop polite"]);
}

#[tokio::test]
async fn brutal_kill_skips_post_stop() {
    let w = Worker::named("k");
    let spec =
        SupervisorSpec::one_for_one().child(ChildSpec::worker("k", w.clone(), ()).shutdown(Shutdown::BrutalKill));
    let app = Supervisor::start("brutal", spec).await.unwrap();
    app.shutdown().await;
    assert_eq!(w.stopped.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn dynamic_children_stop_concurrently_under_one_timer() {
    let app = Supervisor::start("dyn_stop", SupervisorSpec::dynamic(None)).await.unwrap();
    for _ in 0..5 {
        let w = Worker { ignore_stop: true, ..Worker::named("conn") };
        app.start_child(ChildSpec::worker("conn", w, ()).shutdown(Shutdown::Timeout(Duration::from_secs(3))))
            .await
            .unwrap();
    }
    let t0 = tokio::time::Instant::now();
    app.shutdown().await;
    let waited = t0.elapsed();
    // One after another would take 15 s.
    assert!(waited >= Duration::from_secs(3) && waited < Duration::from_secs(4), "waited {waited:?}");
}

#[tokio::test]
async fn shutdown_stops_a_nested_tree_depth_first_in_reverse() {
    let log = Log::default();
    let inner = SupervisorSpec::one_for_one()
        .child(ChildSpec::worker("x", Worker::logging("x", &log), ()))
        .child(ChildSpec::worker("y", Worker::logging("y", &log), ()));
    let spec = SupervisorSpec::one_for_one()
        .child(ChildSpec::worker("a", Worker::logging("a", &log), ()))
        .child(ChildSpec::supervisor("inner", inner))
        .child(ChildSpec::worker("b", Worker::logging("b", &log), ()));
    let app = Supervisor::start("nested_stop", spec).await.unwrap();
    app.shutdown().await;
    assert_eq!(
        *log.lock().unwrap(),
        ["start a", "start x", "start y", "start b", "stop b", "stop y", "stop x", "stop a"]
    );
}

#[tokio::test]
async fn a_dynamic_supervisor_scales_to_many_children_and_stops_them_all() {
    // OTP's scale_start_stop_many_children.
    let app = Supervisor::start("many", SupervisorSpec::dynamic(None)).await.unwrap();
    let w = Worker::named("many");
    for _ in 0..1000 {
        app.start_child(ChildSpec::worker("w", w.clone(), ())).await.unwrap();
    }
    assert_eq!(app.count_children().await.unwrap().active, 1000);
    app.shutdown().await;
    assert_eq!(w.stopped.load(Ordering::SeqCst), 1000, "every child ran post_stop");
}
