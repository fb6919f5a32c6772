//! A killed incarnation's state is dropped before its replacement starts (issue 14): each
//! child here binds a fixed loopback TCP port in `pre_start` and keeps the listener in its
//! state, so a replacement that starts while the old state lives fails to bind, and the
//! restart fails. Multi-threaded runtimes: a killed actor's state is dropped in its own task
//! after it reported its end, which a single-threaded runtime would always finish first.
mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::DEADLINE;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use warden::prelude::*;
use warden::testkit::{inject_kill, EventProbe};
use warden::ChildStatus;

enum M {
    Panic,
    Port(RpcReplyPort<u16>),
}

/// Binds `port` in `pre_start`; the listener lives in the state.
#[derive(Clone)]
struct Binder {
    port: u16,
}

impl Actor for Binder {
    type Msg = M;
    type State = TcpListener;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<M>, _: ()) -> Result<TcpListener, ActorProcessingErr> {
        TcpListener::bind(("127.0.0.1", self.port)).map_err(|e| {
            format!("binding 127.0.0.1:{} failed: {e} (the previous state still holds it)", self.port).into()
        })
    }
    async fn handle(&self, _: ActorRef<M>, msg: M, st: &mut TcpListener) -> Result<(), ActorProcessingErr> {
        match msg {
            M::Panic => panic!("told to panic"),
            M::Port(r) => {
                let _ = r.send(st.local_addr()?.port());
            }
        }
        Ok(())
    }
}

async fn no_failed_restart(probe: &mut EventProbe, path: &warden::ActorPath) {
    probe.restarted(path, DEADLINE).await.unwrap();
    let failed: Vec<_> = probe.seen().iter().filter(|e| matches!(e, SupervisorEvent::RestartFailed { .. })).collect();
    assert!(failed.is_empty(), "a replacement started while its predecessor's state lived: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brutally_killed_bystander_frees_its_port_before_it_starts_again() {
    let a = ChildSpec::worker("a", Binder { port: 47_311 }, ()).shutdown(Shutdown::BrutalKill);
    let ha = a.handle();
    let b = ChildSpec::worker("b", Binder { port: 47_312 }, ()).shutdown(Shutdown::BrutalKill);
    let hb = b.handle();
    let spec = SupervisorSpec::one_for_all().intensity(10, Duration::from_secs(10)).child(a).child(b);
    let app = Supervisor::start("freed_group", spec).await.unwrap();
    let mut probe = EventProbe::new(&app);
    hb.cast(M::Panic).unwrap();
    no_failed_restart(&mut probe, &ha.path()).await;
    probe.restarted(&hb.path(), DEADLINE).await.unwrap();
    assert_eq!(ha.call(M::Port, Some(DEADLINE)).await.unwrap(), 47_311);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_child_frees_its_port_before_its_replacement_starts() {
    let a = ChildSpec::worker("a", Binder { port: 47_313 }, ());
    let ha = a.handle();
    let app = Supervisor::start("freed_kill", SupervisorSpec::one_for_one().child(a)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    inject_kill(&ha).unwrap();
    no_failed_restart(&mut probe, &ha.path()).await;
    assert_eq!(ha.call(M::Port, Some(DEADLINE)).await.unwrap(), 47_313);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_then_restart_child_frees_the_port_first() {
    let a = ChildSpec::worker("a", Binder { port: 47_314 }, ()).shutdown(Shutdown::BrutalKill);
    let ha = a.handle();
    let app = Supervisor::start("freed_api", SupervisorSpec::one_for_one().child(a)).await.unwrap();
    app.terminate_child("a").await.unwrap();
    let info = app.restart_child("a").await.unwrap();
    assert_eq!(info.status, ChildStatus::Running);
    assert_eq!(ha.call(M::Port, Some(DEADLINE)).await.unwrap(), 47_314);
    app.shutdown().await;
}
