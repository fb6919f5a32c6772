//! Crash reports: one structured record per failure, in `tracing` (JSON carries every field)
//! and in the bounded flight recorder.
mod common;

use std::time::Duration;

use common::*;
use warden::prelude::*;
use warden::testkit::EventProbe;
use warden::{Decision, EventBus};

#[tokio::test]
async fn a_panic_produces_a_complete_report() {
    let inner = SupervisorSpec::one_for_one().child(ChildSpec::worker("w", Worker::named("w"), ()));
    let app = Supervisor::start("reports", SupervisorSpec::one_for_one().child(ChildSpec::supervisor("db", inner)))
        .await
        .unwrap();
    let db = app.supervisor_child("db").await.unwrap();
    let w = db.which_children().await.unwrap()[0].actor.clone().unwrap();
    let h = ractor::ActorRef::<Msg>::from(w);
    let mut probe = EventProbe::new(&app);
    h.cast(Msg::Panic).unwrap();
    probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::ChildRestarted { .. })).await.unwrap();
    let reports = app.crash_reports();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let r = &reports[0];
    assert_eq!(r.path, "/reports/db/w");
    assert_eq!(r.ancestors, ["/reports", "/reports/db"]);
    assert_eq!(r.child_id, "w");
    assert_eq!((r.child_type, r.restart, r.shutdown.as_str()), ("worker", "permanent", "5000ms"));
    assert_eq!(r.incarnation, 1);
    assert_eq!(r.reason_kind, "panic");
    assert!(r.reason.contains("w was told to panic"), "{}", r.reason);
    let at = r.panic_location.as_deref().unwrap_or_default();
    assert!(at.contains("common/mod.rs:"), "the panic's source location: {at:?}");
    assert!(r.message_type.unwrap_or_default().ends_with("common::Msg"));
    assert_eq!(r.restarts_in_window, 1);
    assert_eq!(r.intensity, 3);
    assert_eq!(r.decision, Decision::Restart { delay_ms: 0 });
    assert!(r.backtrace.is_none(), "backtraces are opt-in");
    assert!(r.message.is_none(), "message renderings are opt-in");
    app.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_report_names_each_decision() {
    let ms = Duration::from_millis;
    let backoff = ChildSpec::worker("slow", Worker::named("slow"), ())
        .backoff(Backoff::exponential(ms(250), ms(250)).jitter(false));
    let temp = ChildSpec::worker("temp", Worker::named("temp"), ()).restart(RestartType::Temporary);
    let (hs, ht) = (backoff.handle(), temp.handle());
    let spec = SupervisorSpec::one_for_one().intensity(1, Duration::from_secs(60)).child(backoff).child(temp);
    let app = Supervisor::start("decisions", spec).await.unwrap();
    let mut probe = EventProbe::new(&app);
    ht.cast(Msg::Fail).unwrap();
    probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::ChildExited { .. })).await.unwrap();
    hs.cast(Msg::Panic).unwrap();
    probe.restarted(&hs.path(), DEADLINE).await.unwrap();
    hs.cast(Msg::Panic).unwrap();
    probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::SupervisorShutdown { .. })).await.unwrap();
    let decisions: Vec<(String, Decision)> =
        app.crash_reports().into_iter().map(|r| (r.child_id, r.decision)).collect();
    assert_eq!(
        decisions,
        [
            ("temp".to_string(), Decision::NotRestarted),
            ("slow".to_string(), Decision::Restart { delay_ms: 250 }),
            ("slow".to_string(), Decision::Escalate),
        ]
    );
}

#[tokio::test]
async fn normal_exits_are_not_crashes_and_the_recorder_is_bounded() {
    let spec = ChildSpec::worker("w", Worker::named("w"), ());
    let h = spec.handle();
    let events = EventBus::with_recorder(1024, 2);
    let app = Supervisor::start_with_events(
        "bounded",
        SupervisorSpec::one_for_one().intensity(100, Duration::from_secs(60)).child(spec),
        events.clone(),
    )
    .await
    .unwrap();
    let mut probe = EventProbe::new(&app);
    h.cast(Msg::Exit(None)).unwrap();
    probe.restarted(&h.path(), DEADLINE).await.unwrap();
    assert!(app.crash_reports().is_empty(), "a normal exit is not a failure");
    for _ in 0..3 {
        h.cast(Msg::Fail).unwrap();
        probe.restarted(&h.path(), DEADLINE).await.unwrap();
    }
    let kept: Vec<u64> = app.crash_reports().iter().map(|r| r.incarnation).collect();
    assert_eq!(kept, [3, 4], "the last two failures");
    assert_eq!(events.recorder().dropped(), 1);
    let json: serde_json::Value = serde_json::from_str(&events.recorder().to_json()).unwrap();
    assert_eq!(json.as_array().map(|a| a.len()), Some(2));
    app.shutdown().await;
}

#[tokio::test]
async fn an_opted_in_child_reports_the_failing_message_rendered() {
    #[derive(Debug)]
    enum Cmd {
        Charge { account: u32, cents: u64 },
    }
    #[derive(Clone)]
    struct Billing;
    impl ractor::Actor for Billing {
        type Msg = Cmd;
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ractor::ActorRef<Cmd>, _: ()) -> Result<(), ractor::ActorProcessingErr> {
            Ok(())
        }
        async fn handle(
            &self,
            _: ractor::ActorRef<Cmd>,
            cmd: Cmd,
            _: &mut (),
        ) -> Result<(), ractor::ActorProcessingErr> {
            let Cmd::Charge { account, cents } = cmd;
            if cents == 0 {
                return Err(format!("nothing to charge on account {account}").into());
            }
            Ok(())
        }
    }
    let spec = ChildSpec::worker_debug("billing", Billing, ());
    let h = spec.handle();
    let app = Supervisor::start("rendered", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    h.cast(Cmd::Charge { account: 7, cents: 250 }).unwrap();
    h.cast(Cmd::Charge { account: 9, cents: 0 }).unwrap();
    probe.restarted(&h.path(), DEADLINE).await.unwrap();
    let reports = app.crash_reports();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].message.as_deref(), Some("Charge { account: 9, cents: 0 }"), "the failing one, rendered");
    app.shutdown().await;
}
