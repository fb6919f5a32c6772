//! Stable handles: what happens to messages sent around a restart.
mod common;

use std::time::Duration;

use common::*;
use warden::prelude::*;
use warden::testkit::EventProbe;
use warden::{CallError, SendError};

#[tokio::test]
async fn only_the_crashing_message_is_dropped_and_it_is_named() {
    let spec = ChildSpec::worker("w", Worker::named("w"), ());
    let h = spec.handle();
    let app = Supervisor::start("drop_one", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    // Queue work behind a slow message, then the poison, then more work.
    h.cast(Msg::Sleep(Duration::from_millis(50))).unwrap();
    h.cast(Msg::Add(1)).unwrap();
    h.cast(Msg::Panic).unwrap();
    for _ in 0..100 {
        h.cast(Msg::Add(1)).unwrap();
    }
    let exited = probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::ChildExited { .. })).await.unwrap();
    match exited {
        SupervisorEvent::ChildExited { dropped_message: Some(t), reason: ExitReason::Panic { message }, .. } => {
            assert!(t.ends_with("common::Msg"), "{t}");
            assert_eq!(message, "w was told to panic");
        }
        other => panic!("{other:?}"),
    }
    // The old incarnation counted 1; the new one got all 100 queued messages.
    assert_eq!(total(&h).await, 100);
    assert_eq!(incarnation(&h).await, 2);
    app.shutdown().await;
}

#[tokio::test]
async fn an_error_returned_by_a_handler_restarts_like_a_panic() {
    let spec = ChildSpec::worker("w", Worker::named("w"), ());
    let h = spec.handle();
    let app = Supervisor::start("error_restart", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    h.cast(Msg::Fail).unwrap();
    h.cast(Msg::Add(2)).unwrap();
    let e = probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::ChildExited { .. })).await.unwrap();
    assert!(
        matches!(e, SupervisorEvent::ChildExited { reason: ExitReason::Error(ref m), .. } if m.contains("told to fail"))
    );
    assert_eq!(total(&h).await, 2);
    app.shutdown().await;
}

#[tokio::test]
async fn messages_sent_during_a_group_restart_reach_the_new_incarnations() {
    let a = ChildSpec::worker("a", Worker::named("a"), ());
    let b = ChildSpec::worker("b", Worker::named("b"), ());
    let (ha, hb) = (a.handle(), b.handle());
    let spec = SupervisorSpec::one_for_all()
        .intensity(1000, Duration::from_secs(1))
        .child(a)
        .child(b.backoff(Backoff::exponential(Duration::from_millis(1), Duration::from_millis(1)).jitter(false)));
    let app = Supervisor::start("group_stash", spec).await.unwrap();
    let mut probe = EventProbe::new(&app);
    hb.cast(Msg::Panic).unwrap();
    // Keep sending to a while the group is torn down and rebuilt; every message must be
    // either accepted (and then counted by some incarnation) or handed back.
    let mut accepted_after_restart = 0u64;
    let mut restarted = false;
    for _ in 0..2000 {
        match ha.cast(Msg::Add(1)) {
            Ok(()) if restarted => accepted_after_restart += 1,
            Ok(()) => {}
            Err(SendError::StashFull { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
        if !restarted
            && probe
                .drain()
                .iter()
                .any(|e| matches!(e, SupervisorEvent::ChildRestarted { path, .. } if *path == hb.path()))
        {
            restarted = true;
        }
        tokio::task::yield_now().await;
    }
    if !restarted {
        probe.restarted(&hb.path(), DEADLINE).await.unwrap();
    }
    let total_a = total(&ha).await;
    assert_eq!(incarnation(&ha).await, 2);
    assert!(total_a >= accepted_after_restart, "{total_a} < {accepted_after_restart}");
    app.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_full_stash_hands_the_message_back() {
    let spec = ChildSpec::worker("w", Worker::named("w"), ())
        .stash_capacity(3)
        .backoff(Backoff::exponential(Duration::from_secs(1), Duration::from_secs(1)).jitter(false));
    let h = spec.handle();
    let app = Supervisor::start("stash_full", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    warden::testkit::inject_kill(&h).unwrap();
    probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::RestartScheduled { .. })).await.unwrap();
    for i in 0..3 {
        h.cast(Msg::Add(i + 1)).unwrap();
    }
    match h.cast(Msg::Add(100)) {
        Err(SendError::StashFull { capacity: 3, message: Msg::Add(100), path }) => {
            assert_eq!(path.as_str(), "/stash_full/w")
        }
        Err(e) => panic!("{e}"),
        Ok(()) => panic!("accepted past the stash capacity"),
    }
    let call = h.call(Msg::Get, Some(DEADLINE)).await;
    assert!(matches!(call, Err(CallError::StashFull { capacity: 3, .. })), "{call:?}");
    probe.restarted(&h.path(), DEADLINE).await.unwrap();
    assert_eq!(total(&h).await, 6, "the stash was delivered in order to the new incarnation");
    app.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_sent_while_restarting_is_answered_by_the_new_incarnation() {
    let spec = ChildSpec::worker("w", Worker::named("w"), ())
        .backoff(Backoff::exponential(Duration::from_secs(1), Duration::from_secs(1)).jitter(false));
    let h = spec.handle();
    let app = Supervisor::start("call_restart", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    warden::testkit::inject_kill(&h).unwrap();
    probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::RestartScheduled { .. })).await.unwrap();
    assert_eq!(h.call(Msg::Incarnation, Some(DEADLINE)).await.unwrap(), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn a_call_whose_handler_crashes_gets_no_reply_error() {
    #[allow(dead_code)] // the reply port is dropped unanswered on purpose
    enum M {
        Boom(ractor::RpcReplyPort<u64>),
    }
    #[derive(Clone)]
    struct Fragile;
    impl ractor::Actor for Fragile {
        type Msg = M;
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ractor::ActorRef<M>, _: ()) -> Result<(), ractor::ActorProcessingErr> {
            Ok(())
        }
        async fn handle(&self, _: ractor::ActorRef<M>, _m: M, _: &mut ()) -> Result<(), ractor::ActorProcessingErr> {
            panic!("fragile");
        }
    }
    let spec = ChildSpec::worker("f", Fragile, ());
    let h = spec.handle();
    let app = Supervisor::start("no_reply", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let e = h.call(M::Boom, Some(DEADLINE)).await.unwrap_err();
    assert!(matches!(e, CallError::NoReply { ref path } if path.as_str() == "/no_reply/f"), "{e}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_call_times_out_with_the_path_and_the_timeout() {
    let spec = ChildSpec::worker("slow", Worker::named("slow"), ()).shutdown(Shutdown::BrutalKill);
    let h = spec.handle();
    let app = Supervisor::start("call_timeout", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    h.cast(Msg::Sleep(Duration::from_secs(3600))).unwrap();
    let e = h.call(Msg::Get, Some(Duration::from_millis(20))).await.unwrap_err();
    assert!(matches!(e, CallError::Timeout { .. }));
    assert!(e.to_string().contains("/call_timeout/slow"), "{e}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_handle_before_start_hands_messages_back() {
    let spec = ChildSpec::worker("later", Worker::named("later"), ());
    let h = spec.handle();
    assert!(!h.is_running());
    let e = h.cast(Msg::Add(1)).unwrap_err();
    assert!(matches!(e, SendError::NotRunning { message: Some(Msg::Add(1)), .. }));
    let app = Supervisor::start("later", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    assert!(h.is_running());
    assert_eq!(h.path().as_str(), "/later/later");
    app.shutdown().await;
    assert!(h.cast(Msg::Add(1)).is_err());
}
