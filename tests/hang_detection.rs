//! Hang detection: stuck awaits, deadlocks and synchronous loops are caught by the watchdog,
//! reported with their own reason and restarted; idle actors are left alone.
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::DEADLINE;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use warden::prelude::*;
use warden::testkit::EventProbe;

enum M {
    /// Awaits forever.
    Stuck,
    /// Spins on the thread for this long without awaiting.
    Spin(Duration),
    /// Calls the peer and waits for its answer.
    CallPeer(RpcReplyPort<u64>),
    /// Answers the incarnation.
    Who(RpcReplyPort<u64>),
}

#[derive(Clone, Default)]
struct Sticky {
    starts: Arc<AtomicU64>,
    /// Set after both specs exist, so that two actors can call each other.
    peer: Arc<OnceLock<ChildRef<M>>>,
}

impl Actor for Sticky {
    type Msg = M;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<M>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(self.starts.fetch_add(1, Ordering::SeqCst) + 1)
    }
    async fn handle(&self, _: ActorRef<M>, msg: M, inc: &mut u64) -> Result<(), ActorProcessingErr> {
        match msg {
            M::Stuck => std::future::pending::<()>().await,
            M::Spin(d) => {
                let t = Instant::now();
                while t.elapsed() < d {
                    std::hint::spin_loop();
                }
            }
            M::CallPeer(reply) => {
                if let Some(peer) = self.peer.get() {
                    let v = peer.call(M::CallPeer, None).await?;
                    let _ = reply.send(v);
                }
            }
            M::Who(r) => {
                let _ = r.send(*inc);
            }
        }
        Ok(())
    }
}

fn hung_path(e: &SupervisorEvent) -> Option<(String, Duration)> {
    match e {
        SupervisorEvent::ChildExited { path, reason: ExitReason::Hung { stuck_for, .. }, .. } => {
            Some((path.to_string(), *stuck_for))
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_stuck_on_an_await_is_reported_killed_and_restarted() {
    let deadline = Duration::from_millis(200);
    let spec = ChildSpec::worker("stuck", Sticky::default(), ()).deadline(deadline);
    let h = spec.handle();
    let app = Supervisor::start("hang_await", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    let t0 = Instant::now();
    h.cast(M::Stuck).unwrap();
    let e = probe.wait_for(DEADLINE, |e| hung_path(e).is_some()).await.unwrap();
    let detected_after = t0.elapsed();
    let (path, stuck_for) = hung_path(&e).unwrap();
    assert_eq!(path, "/hang_await/stuck");
    assert!(stuck_for > deadline, "reported only past the deadline: {stuck_for:?}");
    assert!(detected_after >= deadline, "{detected_after:?}");
    match &e {
        SupervisorEvent::ChildExited { reason: ExitReason::Hung { message_type, .. }, dropped_message, .. } => {
            assert!(message_type.ends_with("::M"), "{message_type}");
            assert_eq!(dropped_message, &Some(*message_type));
        }
        other => panic!("{other:?}"),
    }
    probe.restarted(&h.path(), DEADLINE).await.unwrap();
    assert_eq!(h.call(M::Who, Some(DEADLINE)).await.unwrap(), 2, "a new incarnation answers");
    let kids = app.which_children().await.unwrap();
    assert_eq!(kids[0].restarts, 1, "a hang counts as a restart");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_between_two_actors_is_broken() {
    let deadline = Duration::from_millis(200);
    let (a, b) = (Sticky::default(), Sticky::default());
    let a_spec = ChildSpec::worker("a", a.clone(), ()).deadline(deadline);
    let b_spec = ChildSpec::worker("b", b.clone(), ()).deadline(deadline);
    let (ha2, hb) = (a_spec.handle(), b_spec.handle());
    // a calls b, b calls a: each waits for the other forever.
    let _ = a.peer.set(hb.clone());
    let _ = b.peer.set(ha2.clone());
    let app = Supervisor::start("deadlock", SupervisorSpec::one_for_one().child(a_spec).child(b_spec)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    let caller = tokio::spawn({
        let ha2 = ha2.clone();
        async move { ha2.call(M::CallPeer, Some(Duration::from_secs(30))).await }
    });
    let first = probe.wait_for(DEADLINE, |e| hung_path(e).is_some()).await.unwrap();
    let (first_path, _) = hung_path(&first).unwrap();
    assert!(first_path == "/deadlock/a" || first_path == "/deadlock/b", "{first_path}");
    // The caller's call was dropped with the killed handler: it gets an error, not a hang.
    let answer = tokio::time::timeout(DEADLINE, caller).await.expect("the caller is released").unwrap();
    assert!(answer.is_err());
    // Both ends are serving again. The second may itself be reported hung a moment later
    // (both handlers started together), and a call that lands in the mailbox of an
    // incarnation being killed is lost with it: ask again until the deadline.
    for h in [&ha2, &hb] {
        let until = Instant::now() + DEADLINE;
        let mut who = h.call(M::Who, Some(Duration::from_secs(1))).await;
        while who.is_err() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
            who = h.call(M::Who, Some(Duration::from_secs(1))).await;
        }
        assert!(who.is_ok(), "{:?} answers after the deadlock: {who:?}", h.path());
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_synchronous_loop_is_detected_while_it_spins_and_service_resumes() {
    let deadline = Duration::from_millis(200);
    let spec = ChildSpec::worker("spin", Sticky::default(), ()).deadline(deadline).shutdown(Shutdown::BrutalKill);
    let h = spec.handle();
    let app = Supervisor::start("hang_spin", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    // Let the tree settle first: a tokio task woken by the spinning handler's thread just
    // before it spins (say, the supervisor finishing its start) would wait behind the loop in
    // that worker's LIFO slot, which other workers cannot steal from. One round trip to each
    // leaves both idle, so the supervisor is next woken by the watchdog, from outside.
    assert_eq!(h.call(M::Who, Some(DEADLINE)).await.unwrap(), 1);
    app.count_children().await.unwrap();
    let spin = Duration::from_secs(4);
    let t0 = Instant::now();
    h.cast(M::Spin(spin)).unwrap();
    probe.wait_for(DEADLINE, |e| hung_path(e).is_some()).await.unwrap();
    assert!(t0.elapsed() < spin, "detected while the loop still held its thread ({:?})", t0.elapsed());
    // The new incarnation serves from another worker thread while the old one still spins.
    probe.restarted(&h.path(), DEADLINE).await.unwrap();
    assert_eq!(h.call(M::Who, Some(DEADLINE)).await.unwrap(), 2);
    assert!(t0.elapsed() < spin, "service resumed before the loop ended ({:?})", t0.elapsed());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_or_quick_actor_is_never_reported() {
    // A generous deadline: the other tests of this binary spin a core, and a thread stalled
    // by the OS inside a handler is indistinguishable from a hung handler.
    let spec = ChildSpec::worker("idle", Sticky::default(), ()).deadline(Duration::from_secs(1));
    let h = spec.handle();
    let app = Supervisor::start("hang_idle", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    // Idle for a while, then many quick handlers, then idle again: well past the deadline in all.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..200 {
        assert_eq!(h.call(M::Who, Some(DEADLINE)).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(probe.drain().iter().all(|e| hung_path(e).is_none()), "{:?}", probe.seen());
    assert_eq!(app.which_children().await.unwrap()[0].restarts, 0);
    app.shutdown().await;
}

enum TickMsg {
    Tick,
    Silence,
    Who(RpcReplyPort<u64>),
}

#[derive(Clone, Default)]
struct Ticker {
    starts: Arc<AtomicU64>,
}

impl Actor for Ticker {
    type Msg = TickMsg;
    /// (incarnation, silent)
    type State = (u64, bool);
    type Arguments = ();
    async fn pre_start(&self, me: ActorRef<TickMsg>, _: ()) -> Result<(u64, bool), ActorProcessingErr> {
        me.send_interval(Duration::from_millis(50), || TickMsg::Tick);
        Ok((self.starts.fetch_add(1, Ordering::SeqCst) + 1, false))
    }
    async fn handle(
        &self,
        me: ActorRef<TickMsg>,
        msg: TickMsg,
        st: &mut (u64, bool),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TickMsg::Tick if !st.1 => assert!(warden::heartbeat(&me), "this child keeps a heartbeat"),
            TickMsg::Tick => {}
            TickMsg::Silence => st.1 = true,
            TickMsg::Who(r) => {
                let _ = r.send(st.0);
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_that_stops_calling_in_misses_its_heartbeat_and_is_restarted() {
    let interval = Duration::from_millis(400);
    let spec = ChildSpec::worker("poller", Ticker::default(), ()).heartbeat(interval);
    let h = spec.handle();
    let app = Supervisor::start("heartbeat", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    // Calling in every 50 ms: never reported, though idle between ticks and well past 400 ms.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(probe.drain().iter().all(|e| hung_path(e).is_none()), "{:?}", probe.seen());
    let t0 = Instant::now();
    h.cast(TickMsg::Silence).unwrap();
    let e = probe.wait_for(DEADLINE, |e| hung_path(e).is_some()).await.unwrap();
    // The last call-in came at most one tick (50 ms, plus scheduling) before the silence; the
    // report comes at least one interval after that call-in.
    assert!(t0.elapsed() >= interval - Duration::from_millis(100), "not before the interval: {:?}", t0.elapsed());
    assert!(
        matches!(e, SupervisorEvent::ChildExited { reason: ExitReason::Hung { message_type, .. }, .. } if message_type == warden::MISSED_HEARTBEAT),
        "{e:?}"
    );
    probe.restarted(&h.path(), DEADLINE).await.unwrap();
    assert_eq!(h.call(TickMsg::Who, Some(DEADLINE)).await.unwrap(), 2);
    // The new incarnation calls in again: no further report.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(probe.drain().iter().filter(|e| hung_path(e).is_some()).count(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn heartbeat_reports_whether_the_caller_keeps_one() {
    let (unwatched, _) = Actor::spawn(None, Sticky::default(), ()).await.unwrap();
    assert!(!warden::heartbeat(&unwatched));
    unwatched.stop(None);
}

/// Holds a resource that only one incarnation may have at a time (a port, a lock, a
/// checkpoint key): released when the state is dropped.
struct Exclusive(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Exclusive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

#[derive(Clone, Default)]
struct Holder {
    held: Arc<std::sync::atomic::AtomicBool>,
}

impl Actor for Holder {
    type Msg = M;
    type State = Exclusive;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<M>, _: ()) -> Result<Exclusive, ActorProcessingErr> {
        if self.held.swap(true, Ordering::SeqCst) {
            return Err("the resource is still held by the previous incarnation".into());
        }
        Ok(Exclusive(self.held.clone()))
    }
    async fn handle(&self, _: ActorRef<M>, msg: M, _: &mut Exclusive) -> Result<(), ActorProcessingErr> {
        match msg {
            M::Stuck => std::future::pending::<()>().await,
            M::Who(r) => {
                let _ = r.send(0);
            }
            _ => {}
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_childs_replacement_starts_after_the_old_state_is_dropped() {
    // ractor hands a stopped actor's state to its supervisor inside the termination event; the
    // replacement must not start before the supervisor has dropped it.
    let spec = ChildSpec::worker("holder", Holder::default(), ()).deadline(Duration::from_millis(100));
    let h = spec.handle();
    let app = Supervisor::start("hang_teardown", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    for round in 0..3 {
        h.cast(M::Stuck).unwrap();
        probe.wait_for(DEADLINE, |e| hung_path(e).is_some()).await.unwrap();
        probe.restarted(&h.path(), DEADLINE).await.unwrap();
        assert_eq!(h.call(M::Who, Some(DEADLINE)).await.unwrap(), 0, "round {round}: the replacement answers");
    }
    let failed: Vec<_> =
        probe.seen().iter().filter(|e| matches!(e, SupervisorEvent::RestartFailed { .. })).cloned().collect();
    assert!(failed.is_empty(), "no replacement started while the old state was alive: {failed:?}");
    app.shutdown().await;
}
