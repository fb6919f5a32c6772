//! The public test kit: probes, fault injection, tree snapshots and the panic trap.
mod common;

use common::*;
use warden::prelude::*;
use warden::testkit::{inject_exit, inject_kill, inject_panic, tree, EventProbe, PanicTrap, ProbeError};

#[tokio::test]
async fn injected_faults_go_through_supervision() {
    let spec = ChildSpec::worker("w", Worker::named("w"), ());
    let h = spec.handle();
    let app = Supervisor::start(
        "inject",
        SupervisorSpec::one_for_one().intensity(10, std::time::Duration::from_secs(5)).child(spec),
    )
    .await
    .unwrap();
    let mut probe = EventProbe::new(&app);
    inject_panic(&h, "injected").await.unwrap();
    let e = probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::ChildExited { .. })).await.unwrap();
    assert!(
        matches!(e, SupervisorEvent::ChildExited { reason: ExitReason::Panic { ref message }, .. } if message == "injected")
    );
    probe.restarted(&h.path(), DEADLINE).await.unwrap();
    assert_eq!(incarnation(&h).await, 2);

    inject_exit(&h, ExitReason::Exit("bad disk".into())).unwrap();
    let e = probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::ChildExited { .. })).await.unwrap();
    assert!(
        matches!(e, SupervisorEvent::ChildExited { reason: ExitReason::Exit(ref r), .. } if r.contains("bad disk")),
        "{e:?}"
    );
    probe.restarted(&h.path(), DEADLINE).await.unwrap();

    inject_kill(&h).unwrap();
    let e = probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::ChildExited { .. })).await.unwrap();
    assert!(matches!(e, SupervisorEvent::ChildExited { reason: ExitReason::Killed, .. }), "{e:?}");
    probe.restarted(&h.path(), DEADLINE).await.unwrap();
    assert_eq!(incarnation(&h).await, 4);
    app.shutdown().await;
}

#[tokio::test]
async fn an_injected_panic_overtakes_queued_messages() {
    let spec = ChildSpec::worker("w", Worker::named("w"), ());
    let h = spec.handle();
    let app = Supervisor::start("inject_first", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    h.cast(Msg::Sleep(std::time::Duration::from_millis(20))).unwrap();
    for _ in 0..10 {
        h.cast(Msg::Add(1)).unwrap();
    }
    inject_panic(&h, "now").await.unwrap();
    // The queued messages were kept and handled by the new incarnation.
    assert_eq!(total(&h).await, 10);
    assert_eq!(incarnation(&h).await, 2);
    app.shutdown().await;
}

#[tokio::test]
async fn a_probe_times_out_with_what_it_saw() {
    let app = Supervisor::start("probe_timeout", SupervisorSpec::one_for_one()).await.unwrap();
    let mut probe = EventProbe::new(&app);
    let e = probe.wait_for(std::time::Duration::from_millis(10), |_| true).await.unwrap_err();
    assert!(matches!(e, ProbeError::Timeout { .. }));
    app.shutdown().await;
}

#[tokio::test]
async fn tree_snapshots_show_every_level() {
    let inner = SupervisorSpec::one_for_all().child(ChildSpec::worker("x", Worker::named("x"), ()));
    let app = Supervisor::start(
        "snapshot",
        SupervisorSpec::one_for_one()
            .child(ChildSpec::worker("a", Worker::named("a"), ()))
            .child(ChildSpec::supervisor("db", inner)),
    )
    .await
    .unwrap();
    let t = tree(&app).await.unwrap();
    assert_eq!(t.paths(), ["/snapshot", "/snapshot/a", "/snapshot/db", "/snapshot/db/x"]);
    assert_eq!(t.find("/snapshot/db/x").unwrap().status, warden::ChildStatus::Running);
    app.shutdown().await;
}

#[tokio::test]
async fn the_panic_trap_fails_a_test_on_unexpected_panics() {
    let spec = ChildSpec::worker("w", Worker::named("w"), ());
    let h = spec.handle();
    let app = Supervisor::start("trap", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let trap = PanicTrap::new(&app);
    let mut probe = EventProbe::new(&app);
    h.cast(Msg::Panic).unwrap();
    probe.restarted(&h.path(), DEADLINE).await.unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| trap.check()));
    let msg = caught.expect_err("the trap must fail the test");
    let text = warden::reason::panic_message(msg.as_ref());
    assert!(text.contains("/trap/w: w was told to panic"), "{text}");

    // Allowed prefixes are ignored.
    let trap = PanicTrap::new(&app).allow("/trap/w");
    h.cast(Msg::Panic).unwrap();
    probe.restarted(&h.path(), DEADLINE).await.unwrap();
    trap.check();
    app.shutdown().await;
}
