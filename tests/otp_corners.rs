//! OTP's last corners (issue 14), each checked against what supervisor.erl does, and the
//! dynamic supervisor's child index holding up when most children are gone.
mod common;

use std::time::Duration;

use common::*;
use warden::prelude::*;
use warden::testkit::EventProbe;
use warden::{ChildStatus, SupervisorError};

type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

fn worker(id: &str) -> WorkerSpec<Msg> {
    ChildSpec::worker(id, Worker::named("w"), ())
}

/// supervisor.erl answers `already_present` for a child whose spec is there but which has no
/// running process, a child waiting for its restart included; `already_started` only with a
/// live pid.
#[tokio::test]
async fn start_child_of_a_child_waiting_for_its_restart_answers_already_present() {
    let spec =
        worker("a").backoff(Backoff::exponential(Duration::from_secs(30), Duration::from_secs(30)).jitter(false));
    let h = spec.handle();
    let app = Supervisor::start("corner_present", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut probe = EventProbe::new(&app);
    h.cast(Msg::Panic).unwrap();
    probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::RestartScheduled { .. })).await.unwrap();
    assert_eq!(app.which_children().await.unwrap()[0].status, ChildStatus::Restarting);
    let again = app.start_child(worker("a")).await;
    assert!(matches!(again, Err(SupervisorError::AlreadyPresent { .. })), "{again:?}");
    // A running child still answers already_started.
    let app2 = Supervisor::start("corner_started", SupervisorSpec::one_for_one().child(worker("b"))).await.unwrap();
    let again = app2.start_child(worker("b")).await;
    assert!(matches!(again, Err(SupervisorError::AlreadyStarted { .. })), "{again:?}");
    app.shutdown().await;
    app2.shutdown().await;
}

/// Children are found by actor and by id through an index; removing most of them compacts
/// it. Whatever is left must still be found, restarted and terminated by id.
#[tokio::test]
async fn a_dynamic_supervisor_finds_its_children_after_most_are_gone() {
    let spec = SupervisorSpec::dynamic(None).intensity(1_000, Duration::from_secs(5));
    let app = Supervisor::start("corner_compact", spec).await.unwrap();
    let mut probe = EventProbe::new(&app);
    let mut ids = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..300 {
        let spec = worker("w");
        handles.push(spec.handle());
        ids.push(app.start_child(spec).await.unwrap().id);
    }
    // Terminate 250 of them (every child but each sixth), then some more by crashing.
    let mut kept = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if i % 6 == 0 {
            kept.push(i);
        } else {
            app.terminate_child(id).await.unwrap();
        }
    }
    assert_eq!(app.count_children().await.unwrap().active, kept.len());
    // Each kept child still restarts when it panics, in place, found by its actor.
    for &i in &kept {
        handles[i].cast(Msg::Panic).unwrap();
        probe.restarted(&handles[i].path(), DEADLINE).await.unwrap();
        assert_eq!(incarnation(&handles[i]).await, 2);
    }
    let listed: Vec<String> = app.which_children().await.unwrap().into_iter().map(|c| c.id).collect();
    let expected: Vec<String> = kept.iter().map(|&i| ids[i].clone()).collect();
    assert_eq!(listed, expected, "start order is kept");
    // And each is terminated by its id.
    for &i in &kept {
        app.terminate_child(&ids[i]).await.unwrap();
    }
    assert_eq!(app.count_children().await.unwrap().active, 0);
    let gone = app.terminate_child(&ids[0]).await;
    assert!(matches!(gone, Err(SupervisorError::NotFound { .. })), "{gone:?}");
    app.shutdown().await;
}

/// A child that chooses not to start (OTP's `ignore`) its first `ignores` times.
#[derive(Clone)]
struct Shy {
    ignores: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Shy {
    fn new(ignores: u64) -> Shy {
        Shy { ignores: std::sync::Arc::new(ignores.into()) }
    }
}

impl ractor::Actor for Shy {
    type Msg = Msg;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ractor::ActorRef<Msg>, _: ()) -> Result<(), ractor::ActorProcessingErr> {
        use std::sync::atomic::Ordering;
        if self.ignores.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(warden::Ignore.into());
        }
        Ok(())
    }
    async fn handle(&self, _: ractor::ActorRef<Msg>, msg: Msg, _: &mut ()) -> Result<(), ractor::ActorProcessingErr> {
        if let Msg::Panic = msg {
            panic!("shy was told to panic");
        }
        Ok(())
    }
}

/// supervisor.erl: a child whose start returns `ignore` keeps its spec with no pid, nothing
/// is reported as an error, and `restart_child` may start it later; `start_child` answers
/// `{ok, undefined}`; a temporary child's spec and a simple_one_for_one child are not kept.
#[tokio::test]
async fn a_child_may_choose_not_to_start_and_be_started_later() {
    let spec = SupervisorSpec::one_for_one().child(ChildSpec::worker("shy", Shy::new(1), ())).child(worker("b"));
    let app = Supervisor::start("corner_ignore", spec).await.unwrap();
    let kids = app.which_children().await.unwrap();
    assert_eq!(
        kids.iter().map(|c| (c.id.as_str(), c.status)).collect::<Vec<_>>(),
        [("shy", ChildStatus::Stopped), ("b", ChildStatus::Running)]
    );
    assert_eq!(app.count_children().await.unwrap().specs, 2);
    // Later it agrees to run.
    assert_eq!(app.restart_child("shy").await.unwrap().status, ChildStatus::Running);
    // start_child of one that ignores: Ok, not running, spec kept.
    let late = app.start_child(ChildSpec::worker("late", Shy::new(1), ())).await.unwrap();
    assert_eq!(late.status, ChildStatus::Stopped);
    assert_eq!(app.count_children().await.unwrap().specs, 3);
    // A temporary one is not kept.
    let temp = ChildSpec::worker("temp", Shy::new(1), ()).restart(RestartType::Temporary);
    assert_eq!(app.start_child(temp).await.unwrap().status, ChildStatus::Stopped);
    assert_eq!(app.count_children().await.unwrap().specs, 3);
    // A restart that ignores leaves the child stopped, and nothing restarts it again.
    let shy = Shy::new(0);
    let ignores = shy.ignores.clone();
    let again = ChildSpec::worker("again", shy, ());
    let h = again.handle();
    app.start_child(again).await.unwrap();
    ignores.store(100, std::sync::atomic::Ordering::SeqCst);
    h.cast(Msg::Panic).unwrap();
    let status_of_again =
        || async { app.which_children().await.unwrap().into_iter().find(|c| c.id == "again").map(|c| c.status) };
    let by = tokio::time::Instant::now() + DEADLINE;
    while status_of_again().await != Some(ChildStatus::Stopped) {
        assert!(tokio::time::Instant::now() < by, "still {:?}", status_of_again().await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let left = ignores.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ignores.load(std::sync::atomic::Ordering::SeqCst), left, "no start after it ignored");
    assert_eq!(status_of_again().await, Some(ChildStatus::Stopped));
    app.shutdown().await;

    // Ignoring when restarted counts as that one restart only: with intensity 1 the
    // supervisor lives on.
    let shy = Shy::new(0);
    let ignores = shy.ignores.clone();
    let once = ChildSpec::worker("once", shy, ());
    let h = once.handle();
    let strict = SupervisorSpec::one_for_one().intensity(1, Duration::from_secs(60)).child(once);
    let strict = Supervisor::start("corner_ignore_once", strict).await.unwrap();
    ignores.store(100, std::sync::atomic::Ordering::SeqCst);
    h.cast(Msg::Panic).unwrap();
    let by = tokio::time::Instant::now() + DEADLINE;
    loop {
        let kids = strict.which_children().await.expect("the supervisor lives on");
        if kids[0].status == ChildStatus::Stopped {
            assert_eq!(kids[0].restarts, 1);
            break;
        }
        assert!(tokio::time::Instant::now() < by, "still {:?}", kids[0].status);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(strict.count_children().await.is_ok(), "not shut down by a second count");
    strict.shutdown().await;

    // A dynamic supervisor keeps nothing of a child that ignores.
    let dynamic = Supervisor::start("corner_ignore_dyn", SupervisorSpec::dynamic(None)).await.unwrap();
    let info = dynamic.start_child(ChildSpec::worker("shy", Shy::new(1), ())).await.unwrap();
    assert_eq!(info.status, ChildStatus::Stopped);
    assert_eq!(dynamic.count_children().await.unwrap().specs, 0);
    dynamic.shutdown().await;
}

/// supervisor.erl's `try_again`: while a one-for-all restart waits to retry a member that
/// failed to start, only that member shows as restarting and the members not started yet as
/// stopped (`undefined`); the retry stops the members started meanwhile, in reverse, and
/// starts the whole group again in order; every failure counts toward intensity.
#[tokio::test]
async fn a_group_restart_whose_member_fails_to_start_is_done_again_from_the_start() {
    let log = Log::default();
    let b = Worker::logging("b", &log);
    let a = ChildSpec::worker("a", Worker::logging("a", &log), ());
    let ha = a.handle();
    let b_spec = ChildSpec::worker("b", b.clone(), ())
        .backoff(Backoff::exponential(Duration::from_secs(3), Duration::from_secs(3)).jitter(false));
    let spec = SupervisorSpec::one_for_all()
        .intensity(10, Duration::from_secs(60))
        .child(a)
        .child(b_spec)
        .child(ChildSpec::worker("c", Worker::logging("c", &log), ()))
        .child(ChildSpec::worker("d", Worker::logging("d", &log), ()));
    let app = Supervisor::start("corner_try_again", spec).await.unwrap();
    let mut probe = EventProbe::new(&app);
    log.lock().unwrap().clear();
    b.fail_starts.store(2, std::sync::atomic::Ordering::SeqCst);
    ha.cast(Msg::Panic).unwrap();
    probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::RestartFailed { .. })).await.unwrap();
    let statuses = |kids: Vec<warden::ChildInfo>| kids.into_iter().map(|k| (k.id, k.status)).collect::<Vec<_>>();
    let waiting = statuses(app.which_children().await.unwrap());
    assert_eq!(
        waiting,
        [
            ("a".to_string(), ChildStatus::Running),
            ("b".to_string(), ChildStatus::Restarting),
            ("c".to_string(), ChildStatus::Stopped),
            ("d".to_string(), ChildStatus::Stopped),
        ]
    );
    // b fails once more, then starts: two retries of the whole group.
    let d_path = warden::ActorPath::root("corner_try_again").child("d");
    probe.restarted(&d_path, DEADLINE).await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        [
            "stop d", "stop c", "stop b",  // the panic: a group restart
            "start a", // b fails
            "stop a", "start a", // retry 1: b fails again
            "stop a", "start a", "start b", "start c", "start d", // retry 2
        ]
    );
    assert!(statuses(app.which_children().await.unwrap()).iter().all(|(_, s)| *s == ChildStatus::Running));
    app.shutdown().await;
}

/// `terminate_child` of the member whose group retry is pending cancels it: nothing of the
/// group starts later, and the members left stopped hand messages back (they are not
/// restarting any more) instead of stashing them.
#[tokio::test]
async fn terminating_the_member_a_group_retry_waits_for_cancels_the_retry() {
    let b = Worker::named("b");
    let a = ChildSpec::worker("a", Worker::named("a"), ());
    let ha = a.handle();
    let c = ChildSpec::worker("c", Worker::named("c"), ());
    let hc = c.handle();
    let b_spec = ChildSpec::worker("b", b.clone(), ())
        .backoff(Backoff::exponential(Duration::from_secs(1), Duration::from_secs(1)).jitter(false));
    let spec = SupervisorSpec::one_for_all().intensity(10, Duration::from_secs(60)).child(a).child(b_spec).child(c);
    let app = Supervisor::start("corner_try_again_cancel", spec).await.unwrap();
    let mut probe = EventProbe::new(&app);
    b.fail_starts.store(1, std::sync::atomic::Ordering::SeqCst);
    ha.cast(Msg::Panic).unwrap();
    probe.wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::RestartFailed { .. })).await.unwrap();
    app.terminate_child("b").await.unwrap();
    assert!(hc.cast(Msg::Add(1)).is_err(), "a member left stopped hands messages back");
    // Past the retry's time: nothing started again.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let kids: Vec<(String, ChildStatus)> =
        app.which_children().await.unwrap().into_iter().map(|k| (k.id, k.status)).collect();
    assert_eq!(
        kids,
        [
            ("a".to_string(), ChildStatus::Running),
            ("b".to_string(), ChildStatus::Stopped),
            ("c".to_string(), ChildStatus::Stopped),
        ]
    );
    app.shutdown().await;
}
