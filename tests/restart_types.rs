//! Restart types against every exit reason: OTP's table, checked on live actors.
mod common;

use common::*;
use warden::prelude::*;
use warden::testkit::{inject_kill, EventProbe};
use warden::ChildStatus;

enum How {
    Normal,
    Shutdown,
    ShutdownWithDetail,
    Custom,
    Panic,
    Error,
    Kill,
}

impl How {
    fn abnormal(&self) -> bool {
        matches!(self, How::Custom | How::Panic | How::Error | How::Kill)
    }
}

async fn end(h: &ChildRef<Msg>, how: &How) {
    match how {
        How::Normal => h.cast(Msg::Exit(None)).unwrap(),
        How::Shutdown => h.cast(Msg::Exit(Some("shutdown".into()))).unwrap(),
        How::ShutdownWithDetail => h.cast(Msg::Exit(Some("shutdown: done".into()))).unwrap(),
        How::Custom => h.cast(Msg::Exit(Some("disk on fire".into()))).unwrap(),
        How::Panic => h.cast(Msg::Panic).unwrap(),
        How::Error => h.cast(Msg::Fail).unwrap(),
        How::Kill => inject_kill(h).unwrap(),
    }
}

async fn check(restart: RestartType, how: How, name: &str) {
    let spec = ChildSpec::worker("w", Worker::named("w"), ()).restart(restart);
    let h = spec.handle();
    let app = Supervisor::start(name, SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    assert_eq!(incarnation(&h).await, 1);
    end(&h, &how).await;
    let exited = probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::ChildExited { .. })).await.unwrap();
    let SupervisorEvent::ChildExited { reason, .. } = exited else { unreachable!() };
    assert_eq!(!reason.is_normal(), how.abnormal(), "{name}: reason {reason}");
    let restarted = match restart {
        RestartType::Permanent => true,
        RestartType::Transient => how.abnormal(),
        RestartType::Temporary => false,
    };
    if restarted {
        probe.restarted(&h.path(), DEADLINE).await.unwrap();
        assert_eq!(incarnation(&h).await, 2, "{name}");
        let kids = app.which_children().await.unwrap();
        assert_eq!(kids[0].status, ChildStatus::Running, "{name}");
        assert_eq!(kids[0].restarts, 1, "{name}");
    } else {
        // The supervisor has handled the exit once it answers (its mailbox is ordered).
        let mut kids = app.which_children().await.unwrap();
        for _ in 0..100 {
            if kids.first().map(|k| k.status != ChildStatus::Running).unwrap_or(true) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            kids = app.which_children().await.unwrap();
        }
        match restart {
            RestartType::Temporary => assert!(kids.is_empty(), "{name}: temporary spec forgotten"),
            _ => assert_eq!(kids[0].status, ChildStatus::Stopped, "{name}"),
        }
        assert!(h.cast(Msg::Add(1)).is_err(), "{name}: a stopped child hands messages back");
    }
    app.shutdown().await;
}

macro_rules! cases {
    ($($name:ident: $restart:ident, $how:ident;)*) => {$(
        #[tokio::test]
        async fn $name() {
            check(RestartType::$restart, How::$how, stringify!($name)).await;
        }
    )*};
}

cases! {
    permanent_normal: Permanent, Normal;
    permanent_shutdown: Permanent, Shutdown;
    permanent_shutdown_detail: Permanent, ShutdownWithDetail;
    permanent_custom: Permanent, Custom;
    permanent_panic: Permanent, Panic;
    permanent_error: Permanent, Error;
    permanent_kill: Permanent, Kill;
    transient_normal: Transient, Normal;
    transient_shutdown: Transient, Shutdown;
    transient_shutdown_detail: Transient, ShutdownWithDetail;
    transient_custom: Transient, Custom;
    transient_panic: Transient, Panic;
    transient_error: Transient, Error;
    transient_kill: Transient, Kill;
    temporary_normal: Temporary, Normal;
    temporary_shutdown: Temporary, Shutdown;
    temporary_custom: Temporary, Custom;
    temporary_panic: Temporary, Panic;
    temporary_error: Temporary, Error;
    temporary_kill: Temporary, Kill;
}
