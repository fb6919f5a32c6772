//! The runtime API and every one of its error cases, with OTP's names.
mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use warden::prelude::*;
use warden::testkit::EventProbe;
use warden::{ChildCounts, ChildStatus, SupervisorError};

fn worker(id: &str) -> WorkerSpec<Msg> {
    ChildSpec::worker(id, Worker::named("w"), ())
}

#[tokio::test]
async fn start_child_adds_and_refuses_duplicates() {
    let app = Supervisor::start("api_start", SupervisorSpec::one_for_one().child(worker("a"))).await.unwrap();
    let b = worker("b");
    let hb = b.handle();
    let info = app.start_child(b).await.unwrap();
    assert_eq!(info.path.as_str(), "/api_start/b");
    assert_eq!(info.status, ChildStatus::Running);
    assert_eq!(incarnation(&hb).await, 1);
    // Same id while running: already started.
    let e = app.start_child(worker("a")).await.unwrap_err();
    assert!(matches!(e, SupervisorError::AlreadyStarted { ref path } if path.as_str() == "/api_start/a"), "{e}");
    // Same id while terminated: already present.
    app.terminate_child("a").await.unwrap();
    let e = app.start_child(worker("a")).await.unwrap_err();
    assert!(matches!(e, SupervisorError::AlreadyPresent { .. }), "{e}");
    // Invalid spec.
    let e = app.start_child(worker("x/y")).await.unwrap_err();
    assert!(matches!(e, SupervisorError::InvalidSpec { .. }), "{e}");
    // Start failure: the error names the child and the cause, and the spec is not kept.
    let bad = Worker::named("bad");
    bad.fail_starts.store(1, Ordering::SeqCst);
    let e = app.start_child(ChildSpec::worker("bad", bad, ())).await.unwrap_err();
    match e {
        SupervisorError::StartFailed { path, cause } => {
            assert_eq!(path.as_str(), "/api_start/bad");
            assert!(cause.contains("bad refuses to start"), "{cause}");
        }
        other => panic!("{other}"),
    }
    let ids: Vec<String> = app.which_children().await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["a", "b"]);
    app.shutdown().await;
}

#[tokio::test]
async fn terminate_restart_and_delete_follow_otp() {
    let a = worker("a");
    let ha = a.handle();
    let app = Supervisor::start("api_trd", SupervisorSpec::one_for_one().child(a)).await.unwrap();
    let missing = |e: &SupervisorError| matches!(e, SupervisorError::NotFound { id, .. } if id == "nope");
    assert!(missing(&app.terminate_child("nope").await.unwrap_err()));
    assert!(missing(&app.restart_child("nope").await.unwrap_err()));
    assert!(missing(&app.delete_child("nope").await.unwrap_err()));
    // Running: restart and delete refuse.
    assert!(matches!(app.restart_child("a").await.unwrap_err(), SupervisorError::Running { .. }));
    assert!(matches!(app.delete_child("a").await.unwrap_err(), SupervisorError::Running { .. }));
    // Terminated: the spec stays, the handle hands messages back.
    app.terminate_child("a").await.unwrap();
    assert_eq!(app.which_children().await.unwrap()[0].status, ChildStatus::Stopped);
    assert_eq!(app.count_children().await.unwrap(), ChildCounts { specs: 1, active: 0, supervisors: 0, workers: 1 });
    let back = ha.cast(Msg::Add(1)).unwrap_err();
    assert!(matches!(back.into_message(), Some(Msg::Add(1))), "the message is handed back");
    // terminate_child of a stopped child is fine (OTP returns ok).
    app.terminate_child("a").await.unwrap();
    // Restart: a new incarnation behind the same handle.
    let info = app.restart_child("a").await.unwrap();
    assert_eq!(info.incarnation, 2);
    assert_eq!(incarnation(&ha).await, 2);
    // Delete after terminate removes the spec.
    app.terminate_child("a").await.unwrap();
    app.delete_child("a").await.unwrap();
    assert_eq!(app.count_children().await.unwrap(), ChildCounts::default());
    app.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn restart_and_delete_refuse_a_child_that_is_restarting() {
    let spec = worker("a").backoff(Backoff::exponential(Duration::from_secs(5), Duration::from_secs(5)).jitter(false));
    let h = spec.handle();
    let app = Supervisor::start("api_restarting", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    h.cast(Msg::Panic).unwrap();
    probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::RestartScheduled { .. })).await.unwrap();
    assert!(matches!(app.restart_child("a").await.unwrap_err(), SupervisorError::Restarting { .. }));
    assert!(matches!(app.delete_child("a").await.unwrap_err(), SupervisorError::Restarting { .. }));
    // terminate_child cancels the pending restart.
    app.terminate_child("a").await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(app.which_children().await.unwrap()[0].status, ChildStatus::Stopped);
    app.shutdown().await;
}

#[tokio::test]
async fn which_and_count_children_describe_workers_and_supervisors() {
    let inner = SupervisorSpec::one_for_one().child(worker("x"));
    let app = Supervisor::start(
        "api_which",
        SupervisorSpec::one_for_one().child(worker("a")).child(ChildSpec::supervisor("inner", inner)),
    )
    .await
    .unwrap();
    let kids = app.which_children().await.unwrap();
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[0].child_type, warden::ChildType::Worker);
    assert_eq!(kids[1].child_type, warden::ChildType::Supervisor);
    assert!(kids[0].supervisor.is_none() && kids[1].supervisor.is_some());
    assert!(kids.iter().all(|k| k.actor.is_some()));
    assert_eq!(app.count_children().await.unwrap(), ChildCounts { specs: 2, active: 2, supervisors: 1, workers: 1 });
    let inner = app.supervisor_child("inner").await.unwrap();
    assert_eq!(inner.which_children().await.unwrap()[0].path.as_str(), "/api_which/inner/x");
    assert!(matches!(app.supervisor_child("a").await.unwrap_err(), SupervisorError::NotFound { .. }));
    app.shutdown().await;
}

#[tokio::test]
async fn dynamic_supervisors_start_children_up_to_max_children() {
    let app = Supervisor::start("api_dyn", SupervisorSpec::dynamic(Some(2))).await.unwrap();
    let c1 = app.start_child(worker("conn")).await.unwrap();
    let c2 = app.start_child(worker("conn")).await.unwrap();
    assert_eq!((c1.id.as_str(), c2.id.as_str()), ("conn-1", "conn-2"));
    assert_eq!(c2.path.as_str(), "/api_dyn/conn-2");
    let e = app.start_child(worker("conn")).await.unwrap_err();
    assert!(matches!(e, SupervisorError::MaxChildren { max: 2, .. }), "{e}");
    // The same spec (and so the same handle) cannot run twice.
    let spec = worker("solo");
    app.terminate_child("conn-1").await.unwrap();
    app.start_child(spec.clone()).await.unwrap();
    assert!(matches!(
        app.start_child(spec).await.unwrap_err(),
        SupervisorError::MaxChildren { .. } | SupervisorError::AlreadyStarted { .. }
    ));
    // OTP's simple_one_for_one has no restart_child / delete_child.
    assert!(matches!(app.restart_child("conn-2").await.unwrap_err(), SupervisorError::NotSupported { .. }));
    assert!(matches!(app.delete_child("conn-2").await.unwrap_err(), SupervisorError::NotSupported { .. }));
    // A terminated dynamic child is removed.
    app.terminate_child("conn-2").await.unwrap();
    assert_eq!(app.count_children().await.unwrap().specs, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn dynamic_children_restart_one_for_one_and_are_removed_when_not_restarted() {
    let app = Supervisor::start("api_dyn_restart", SupervisorSpec::dynamic(None)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    let p = worker("p");
    let hp = p.handle();
    let t = worker("t").restart(RestartType::Transient);
    let ht = t.handle();
    app.start_child(p).await.unwrap();
    app.start_child(t).await.unwrap();
    hp.cast(Msg::Panic).unwrap();
    probe.restarted(&hp.path(), DEADLINE).await.unwrap();
    assert_eq!(incarnation(&hp).await, 2);
    ht.cast(Msg::Exit(None)).unwrap();
    probe
        .wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::ChildExited { path, .. } if *path == ht.path()))
        .await
        .unwrap();
    let ids: Vec<String> = app.which_children().await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["p-1"]);
    app.shutdown().await;
}

#[tokio::test]
async fn the_api_reports_a_stopped_supervisor_as_unavailable() {
    let app = Supervisor::start("api_gone", SupervisorSpec::one_for_one()).await.unwrap();
    app.shutdown().await;
    let e = app.which_children().await.unwrap_err();
    assert!(
        matches!(e, SupervisorError::Unavailable { ref supervisor, .. } if supervisor.as_str() == "/api_gone"),
        "{e}"
    );
}

/// A root supervisor that gave up before anybody waited still says how it ended; `stop`
/// returns at once, the status tells stopping from stopped, and `wait` answers the reason.
#[tokio::test]
async fn wait_answers_how_a_supervisor_ended_even_after_the_fact() {
    use warden::SupervisorStatus;
    // Gives up at once: intensity 0, and the child panics in its handler right away.
    let spec = worker("a");
    let h = spec.handle();
    let app = Supervisor::start(
        "api_wait_early",
        SupervisorSpec::one_for_one().intensity(0, Duration::from_secs(5)).child(spec),
    )
    .await
    .unwrap();
    h.cast(Msg::Panic).unwrap();
    let by = tokio::time::Instant::now() + DEADLINE;
    while app.status() != SupervisorStatus::Stopped {
        assert!(tokio::time::Instant::now() < by, "still {:?}", app.status());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Nobody subscribed or waited before it ended.
    assert_eq!(app.wait().await, Some(warden::ExitReason::Shutdown(Some("reached max restart intensity".into()))));

    // stop() returns while a child takes its time to stop: stopping, then stopped.
    let slow = ChildSpec::worker("slow", Worker { ignore_stop: true, ..Worker::named("slow") }, ())
        .shutdown(Shutdown::Timeout(Duration::from_secs(2)));
    let app = Supervisor::start("api_wait_stop", SupervisorSpec::one_for_one().child(slow)).await.unwrap();
    assert_eq!(app.status(), SupervisorStatus::Running);
    app.stop();
    let by = tokio::time::Instant::now() + DEADLINE;
    while app.status() == SupervisorStatus::Running {
        assert!(tokio::time::Instant::now() < by);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(app.status(), SupervisorStatus::Stopping, "its child takes 2 s to be killed");
    assert_eq!(app.wait().await, Some(warden::ExitReason::Shutdown(None)));
    assert_eq!(app.status(), SupervisorStatus::Stopped);
}
