//! Restart intensity, escalation through nested supervisors, failed restarts and backoff.
mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use warden::prelude::*;
use warden::testkit::{inject_kill, EventProbe};
use warden::{ChildStatus, EventBus};

type Log = Arc<Mutex<Vec<String>>>;

fn is_exceeded(e: &SupervisorEvent) -> bool {
    matches!(e, SupervisorEvent::IntensityExceeded { .. })
}

#[tokio::test(start_paused = true)]
async fn more_restarts_than_intensity_shut_the_supervisor_down_in_reverse_order() {
    let log = Log::default();
    let a = ChildSpec::worker("a", Worker::logging("a", &log), ());
    let b = ChildSpec::worker("b", Worker::logging("b", &log), ());
    let c = ChildSpec::worker("c", Worker::logging("c", &log), ());
    let hb = b.handle();
    let spec = SupervisorSpec::one_for_one().intensity(2, Duration::from_secs(5)).child(a).child(b).child(c);
    let app = Supervisor::start("intensity", spec).await.unwrap();
    let mut probe = EventProbe::new(&app);
    for _ in 0..2 {
        hb.cast(Msg::Panic).unwrap();
        probe.restarted(&hb.path(), DEADLINE).await.unwrap();
    }
    log.lock().unwrap().clear();
    hb.cast(Msg::Panic).unwrap();
    probe.wait_for(DEADLINE, is_exceeded).await.unwrap();
    let down = probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::SupervisorShutdown { .. })).await.unwrap();
    let SupervisorEvent::SupervisorShutdown { path, reason } = down else { unreachable!() };
    assert_eq!(path.as_str(), "/intensity");
    assert!(matches!(reason, ExitReason::Shutdown(Some(ref d)) if d.contains("intensity")), "{reason}");
    app.wait().await;
    assert!(!app.is_running());
    // b was waiting in its crashed handler (no post_stop); c and a stop in reverse order.
    assert_eq!(*log.lock().unwrap(), ["stop c", "stop a"]);
}

#[tokio::test(start_paused = true)]
async fn the_intensity_window_slides() {
    let w = ChildSpec::worker("w", Worker::named("w"), ());
    let h = w.handle();
    let app = Supervisor::start("sliding", SupervisorSpec::one_for_one().intensity(1, Duration::from_secs(5)).child(w))
        .await
        .unwrap();
    let mut probe = EventProbe::new(&app);
    for round in 0..4 {
        h.cast(Msg::Panic).unwrap();
        probe.restarted(&h.path(), DEADLINE).await.unwrap();
        assert_eq!(incarnation(&h).await, round + 2);
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    assert!(!probe.seen().iter().any(is_exceeded));
    // Two within the period are one too many.
    h.cast(Msg::Panic).unwrap();
    probe.restarted(&h.path(), DEADLINE).await.unwrap();
    h.cast(Msg::Panic).unwrap();
    probe.wait_for(DEADLINE, is_exceeded).await.unwrap();
    app.wait().await;
}

#[tokio::test(start_paused = true)]
async fn escalation_goes_to_the_parent_which_restarts_the_subtree() {
    let w = ChildSpec::worker("w", Worker::named("w"), ());
    let hw = w.handle();
    let inner = SupervisorSpec::one_for_one().intensity(1, Duration::from_secs(5)).child(w);
    let sibling = ChildSpec::worker("sibling", Worker::named("s"), ());
    let hs = sibling.handle();
    let root = SupervisorSpec::one_for_one().child(ChildSpec::supervisor("inner", inner)).child(sibling);
    let app = Supervisor::start("escalate", root).await.unwrap();
    let mut probe = EventProbe::new(&app);
    hw.cast(Msg::Panic).unwrap();
    probe.restarted(&hw.path(), DEADLINE).await.unwrap();
    hw.cast(Msg::Panic).unwrap();
    let e = probe.wait_for(DEADLINE, is_exceeded).await.unwrap();
    assert_eq!(e.path().as_str(), "/escalate/inner");
    let inner_path = warden::ActorPath::root("escalate").child("inner");
    let exited = probe
        .wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::ChildExited { path, .. } if *path == inner_path))
        .await
        .unwrap();
    assert!(matches!(exited, SupervisorEvent::ChildExited { reason: ExitReason::Shutdown(_), .. }));
    probe.restarted(&inner_path, DEADLINE).await.unwrap();
    // The worker's handle outlived its supervisor's restart; the sibling was not touched.
    assert_eq!(incarnation(&hw).await, 3);
    assert_eq!(incarnation(&hs).await, 1);
    let inner_ref = app.supervisor_child("inner").await.unwrap();
    assert_eq!(inner_ref.count_children().await.unwrap().active, 1);
    app.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn escalation_reaches_the_root_when_every_level_gives_up() {
    let w = ChildSpec::worker("w", Worker::named("w"), ());
    let hw = w.handle();
    let inner = SupervisorSpec::one_for_one().intensity(0, Duration::from_secs(5)).child(w);
    let root =
        SupervisorSpec::one_for_one().intensity(0, Duration::from_secs(5)).child(ChildSpec::supervisor("inner", inner));
    let app = Supervisor::start("to_root", root).await.unwrap();
    let mut probe = EventProbe::new(&app);
    hw.cast(Msg::Panic).unwrap();
    let first = probe.wait_for(DEADLINE, is_exceeded).await.unwrap();
    assert_eq!(first.path().as_str(), "/to_root/inner");
    let second = probe.wait_for(DEADLINE, is_exceeded).await.unwrap();
    assert_eq!(second.path().as_str(), "/to_root");
    app.wait().await;
    assert!(hw.cast(Msg::Add(1)).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_failed_restart_shows_as_restarting_while_the_api_answers_and_every_retry_counts() {
    let w = Worker::named("w");
    let spec = ChildSpec::worker("w", w.clone(), ())
        .backoff(Backoff::exponential(Duration::from_secs(1), Duration::from_secs(1)).jitter(false));
    let h = spec.handle();
    let app =
        Supervisor::start("failing", SupervisorSpec::one_for_one().intensity(3, Duration::from_secs(60)).child(spec))
            .await
            .unwrap();
    let mut probe = EventProbe::new(&app);
    w.fail_starts.store(2, Ordering::SeqCst);
    h.cast(Msg::Panic).unwrap();
    probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::RestartFailed { .. })).await.unwrap();
    // Between retries the supervisor answers and shows the child as restarting.
    let kids = app.which_children().await.unwrap();
    assert_eq!(kids[0].status, ChildStatus::Restarting);
    assert_eq!(app.count_children().await.unwrap().active, 0);
    // Messages sent meanwhile wait in the mailbox for the new incarnation.
    h.cast(Msg::Add(7)).unwrap();
    probe.restarted(&h.path(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(total(&h).await, 7);
    let failed = probe.seen().iter().filter(|e| matches!(e, SupervisorEvent::RestartFailed { .. })).count();
    assert_eq!(failed, 2);
    // 1 panic + 2 failed retries = 3 restarts counted: one more failure exceeds intensity 3.
    h.cast(Msg::Panic).unwrap();
    probe.wait_for(Duration::from_secs(30), is_exceeded).await.unwrap();
    app.wait().await;
}

#[tokio::test(start_paused = true)]
async fn a_killed_child_whose_restart_fails_is_retried_and_stashes_messages() {
    let w = Worker::named("w");
    let spec = ChildSpec::worker("w", w.clone(), ())
        .backoff(Backoff::exponential(Duration::from_millis(500), Duration::from_secs(2)).jitter(false));
    let h = spec.handle();
    let app = Supervisor::start(
        "killed_retry",
        SupervisorSpec::one_for_one().intensity(10, Duration::from_secs(60)).child(spec),
    )
    .await
    .unwrap();
    let mut probe = EventProbe::new(&app);
    w.fail_starts.store(1, Ordering::SeqCst);
    inject_kill(&h).unwrap();
    probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::RestartFailed { .. })).await.unwrap();
    assert_eq!(app.which_children().await.unwrap()[0].status, ChildStatus::Restarting);
    for i in 0..5 {
        h.cast(Msg::Add(i)).expect("kept in the stash while restarting");
    }
    probe.restarted(&h.path(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(total(&h).await, 10, "stashed messages are delivered to the new incarnation");
    app.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_grow_and_reset_after_a_quiet_period() {
    let ms = Duration::from_millis;
    let spec = ChildSpec::worker("w", Worker::named("w"), ())
        .backoff(Backoff::exponential(ms(100), ms(400)).jitter(false).reset_after(Duration::from_secs(10)));
    let h = spec.handle();
    let events = EventBus::default();
    let mut probe = EventProbe::from_receiver(events.subscribe());
    let app = Supervisor::start_with_events(
        "backoff",
        SupervisorSpec::one_for_one().intensity(100, Duration::from_secs(1)).child(spec),
        events,
    )
    .await
    .unwrap();
    let mut delays = Vec::new();
    for _ in 0..4 {
        let t0 = tokio::time::Instant::now();
        h.cast(Msg::Panic).unwrap();
        probe.restarted(&h.path(), DEADLINE).await.unwrap();
        let took = t0.elapsed();
        let scheduled = probe
            .seen()
            .iter()
            .rev()
            .find_map(|e| match e {
                SupervisorEvent::RestartScheduled { delay, .. } => Some(*delay),
                _ => None,
            })
            .unwrap();
        assert!(took >= scheduled, "restarted after {took:?}, scheduled {scheduled:?}");
        delays.push(scheduled);
    }
    assert_eq!(delays, [ms(100), ms(200), ms(400), ms(400)]);
    tokio::time::sleep(Duration::from_secs(11)).await;
    h.cast(Msg::Panic).unwrap();
    probe.restarted(&h.path(), DEADLINE).await.unwrap();
    let last = probe.seen().iter().rev().find_map(|e| match e {
        SupervisorEvent::RestartScheduled { delay, .. } => Some(*delay),
        _ => None,
    });
    assert_eq!(last, Some(ms(100)));
    app.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_sibling_failing_to_start_in_a_group_restart_is_retried_in_order() {
    // OTP's one_for_all_other_child_fails_restart.
    let log = Log::default();
    let b = Worker::logging("b", &log);
    let a = ChildSpec::worker("a", Worker::logging("a", &log), ());
    let ha = a.handle();
    let spec = SupervisorSpec::one_for_all()
        .intensity(5, Duration::from_secs(60))
        .child(a)
        .child(ChildSpec::worker("b", b.clone(), ()))
        .child(ChildSpec::worker("c", Worker::logging("c", &log), ()));
    let app = Supervisor::start("group_retry", spec).await.unwrap();
    let mut probe = EventProbe::new(&app);
    log.lock().unwrap().clear();
    b.fail_starts.store(1, Ordering::SeqCst);
    ha.cast(Msg::Panic).unwrap();
    let failed = probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::RestartFailed { .. })).await.unwrap();
    assert_eq!(failed.path().as_str(), "/group_retry/b");
    let c_path = warden::ActorPath::root("group_retry").child("c");
    probe.restarted(&c_path, DEADLINE).await.unwrap();
    // OTP's try_again: a, started before b failed, is stopped again and the whole group
    // starts again in order; c waited for b, so the start order holds across the retry.
    assert_eq!(*log.lock().unwrap(), ["stop c", "stop b", "start a", "stop a", "start a", "start b", "start c"]);
    let kids = app.which_children().await.unwrap();
    assert!(kids.iter().all(|k| k.status == ChildStatus::Running));
    app.shutdown().await;
}
