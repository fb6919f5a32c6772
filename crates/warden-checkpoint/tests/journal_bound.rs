//! A durable actor whose policy never asks for a snapshot still gets one every
//! `max_journal` events, so a restart replays at most that many (issue 15); the bound is on by
//! default and off only when the policy says so.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use warden_checkpoint::{
    Checkpoint, CheckpointConfig, Checkpointed, Checkpoints, EventSourced, MemoryStore, SnapshotPolicy, Store,
    DEFAULT_MAX_JOURNAL,
};
use warden_core::{ChildSpec, Supervisor, SupervisorEvent, SupervisorSpec};

#[derive(Clone)]
struct Tally;

enum Msg {
    Add(RpcReplyPort<u64>),
    Crash,
}

#[derive(Serialize, Deserialize)]
struct Added;

impl Actor for Tally {
    type Msg = Msg;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(&self, _: ActorRef<Msg>, msg: Msg, n: &mut u64) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Add(r) => {
                self.persist(n, Added).await?;
                let _ = r.send(*n);
            }
            Msg::Crash => panic!("told to crash"),
        }
        Ok(())
    }
}

impl Checkpoint for Tally {
    type Snapshot = u64;
    fn snapshot(&self, n: &u64) -> u64 {
        *n
    }
    fn restore(&self, n: &mut u64, s: u64) {
        *n = s;
    }
}

impl EventSourced for Tally {
    type Event = Added;
    fn apply(&self, n: &mut u64, _: &Added) {
        *n += 1;
    }
}

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

async fn replayed_after_a_crash(policy: SnapshotPolicy, name: &str, events: u64) -> (u64, u64, usize) {
    let store = MemoryStore::default();
    let ck = Checkpoints::start(std::sync::Arc::new(store.clone()), CheckpointConfig::default()).await.unwrap();
    let key = format!("journal/{name}");
    let spec = ChildSpec::worker("tally", Checkpointed::durable(Tally, &ck, key.clone(), policy), ());
    let h = spec.handle();
    let app = Supervisor::start(name, SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    for _ in 0..events {
        h.call(Msg::Add, WAIT).await.unwrap();
    }
    ck.flush().await.unwrap();
    let snapshots = store.snapshots(&key).unwrap().len();
    let mut events_rx = app.subscribe();
    h.cast(Msg::Crash).unwrap();
    let replayed = loop {
        match tokio::time::timeout(Duration::from_secs(10), events_rx.recv()).await {
            Ok(Ok(SupervisorEvent::StateRestored { from, .. })) => break from.replayed,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            other => panic!("no StateRestored: {other:?}"),
        }
    };
    let value = h.call(Msg::Add, WAIT).await.unwrap() - 1;
    app.shutdown().await;
    (replayed, value, snapshots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_never_grows_past_the_bound_between_snapshots() {
    // No snapshot trigger but the bound: 25 events, bound 10.
    let policy = SnapshotPolicy::new().on_stop(false).max_journal(10);
    let (replayed, value, snapshots) = replayed_after_a_crash(policy, "journal_bounded", 25).await;
    assert_eq!(value, 25, "nothing lost");
    assert!(snapshots >= 1, "a snapshot was forced");
    assert!(replayed <= 10, "replayed {replayed} events past the bound of 10");
    // Without the bound, the whole journal is replayed.
    let policy = SnapshotPolicy::new().on_stop(false).unbounded_journal();
    let (replayed, value, snapshots) = replayed_after_a_crash(policy, "journal_unbounded", 25).await;
    assert_eq!((replayed, value, snapshots), (25, 25, 0));
    // On by default.
    assert_eq!(SnapshotPolicy::new().max_journal, Some(DEFAULT_MAX_JOURNAL));
}
