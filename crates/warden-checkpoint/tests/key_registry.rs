//! The service's registry of keys and of damaged entries is bounded (issue 15): keys whose
//! actor has gone are forgotten past `max_idle_keys`, the oldest first, and damaged-entry
//! records past `max_damaged`; a key released recently is still remembered, so a restart
//! does not report its damage twice. A key belongs to one live actor at a time
//! (`KeyInUse` after `CLAIM_RELEASE_WAIT`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use warden_checkpoint::envelope::{self, Kind};
use warden_checkpoint::{
    Checkpoint, CheckpointConfig, CheckpointEvent, Checkpointed, Checkpoints, MemoryStore, SnapshotPolicy, Store,
    WriteOp,
};
use warden_core::{ChildSpec, RestartType, Supervisor, SupervisorSpec};

#[derive(Clone)]
struct Cell;

impl Actor for Cell {
    type Msg = RpcReplyPort<u64>;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(&self, _: ActorRef<Self::Msg>, r: Self::Msg, n: &mut u64) -> Result<(), ActorProcessingErr> {
        let _ = r.send(*n);
        Ok(())
    }
}

impl Checkpoint for Cell {
    type Snapshot = u64;
    fn snapshot(&self, n: &u64) -> u64 {
        *n
    }
    fn restore(&self, n: &mut u64, s: u64) {
        *n = s;
    }
}

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// Starts and stops one actor per key, in turn, under a dynamic supervisor named `name` (no
/// snapshot on stop: the stored snapshots stay as they are).
async fn run_through(ck: &Checkpoints, name: &str, keys: &[String]) {
    let sup = Supervisor::start(name, SupervisorSpec::dynamic(None)).await.unwrap();
    for key in keys {
        let spec = ChildSpec::worker(
            key.replace('/', "-"),
            Checkpointed::new(Cell, ck, key.clone(), SnapshotPolicy::new().on_stop(false)),
            (),
        )
        .restart(RestartType::Temporary);
        let h = spec.handle();
        let info = sup.start_child(spec).await.unwrap();
        h.call(|r| r, WAIT).await.unwrap();
        sup.terminate_child(&info.id).await.unwrap();
    }
    sup.shutdown().await;
    ck.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_whose_actor_went_are_forgotten_past_the_bound() {
    let keys: Vec<String> = (0..40).map(|i| format!("registry/a{i}")).collect();
    let config = CheckpointConfig { max_idle_keys: 4, ..CheckpointConfig::default() };
    let bounded = Checkpoints::start(MemoryStore::new(), config).await.unwrap();
    run_through(&bounded, "registry-bounded", &keys).await;
    // One more release, once everything earlier has settled, looks at what is left.
    run_through(&bounded, "registry-bounded-last", &["registry/last".to_string()]).await;
    let remembered = bounded.stats().keys;
    assert!(remembered <= 5, "at most the bound (and the key just released) stay: {remembered}");

    // With the default bound, every key of this run is remembered (as every key of a
    // process was, before there was a bound).
    let unbounded = Checkpoints::start(MemoryStore::new(), CheckpointConfig::default()).await.unwrap();
    run_through(&unbounded, "registry-default", &keys).await;
    assert_eq!(unbounded.stats().keys, 40);
}

fn snapshot(key: &str, seq: u64, value: u64, damaged: bool) -> WriteOp {
    let mut bytes = envelope::encode(Kind::Snapshot, 1, seq, 0, &value).unwrap();
    if damaged {
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
    }
    WriteOp::Snapshot { key: Arc::from(key), seq, bytes, retain: 10, created_unix_ms: 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_entries_are_remembered_up_to_the_bound() {
    let store = MemoryStore::new();
    let keys: Vec<String> = (0..6).map(|i| format!("registry/d{i}")).collect();
    for key in &keys {
        store.commit(&[snapshot(key, 1, 7, false), snapshot(key, 2, 8, true)]).unwrap();
    }
    let config = CheckpointConfig { max_damaged: 2, ..CheckpointConfig::default() };
    let ck = Checkpoints::start(store, config).await.unwrap();
    let mut events = ck.subscribe();
    run_through(&ck, "registry-damaged", &keys).await;
    let mut reported = 0;
    while let Ok(event) = events.try_recv() {
        if let CheckpointEvent::Corrupt { seq: 2, .. } = event {
            reported += 1;
        }
    }
    assert_eq!(reported, 6, "each damaged snapshot reported once");
    assert_eq!(ck.stats().damaged, 2, "only the newest records are kept");

    // The newest key's damage is still remembered: running it again reports nothing new.
    let newest = keys[5].clone();
    run_through(&ck, "registry-damaged-again", std::slice::from_ref(&newest)).await;
    assert!(
        !std::iter::from_fn(|| events.try_recv().ok()).any(|e| matches!(e, CheckpointEvent::Corrupt { .. })),
        "a remembered damaged entry is not reported again"
    );
    // The oldest one's record went: it is decoded, and reported, again.
    run_through(&ck, "registry-damaged-oldest", std::slice::from_ref(&keys[0])).await;
    assert!(
        std::iter::from_fn(|| events.try_recv().ok()).any(|e| matches!(e, CheckpointEvent::Corrupt { seq: 2, .. })),
        "a forgotten record's entry is reported again"
    );
}

/// A temporary child named `id` holding the one key the claim test shares.
fn claimant(id: &str, ck: &Checkpoints) -> ChildSpec {
    ChildSpec::worker(id, Checkpointed::new(Cell, ck, "inuse/shared", SnapshotPolicy::new()), ())
        .restart(RestartType::Temporary)
        .into()
}

/// A key belongs to one live actor at a time: a second actor claiming a key whose holder is
/// alive waits `CLAIM_RELEASE_WAIT` (500 ms) for it to go, then fails to start with `KeyInUse`,
/// naming the key and the holder; once the holder has stopped, the key is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_claimant_of_a_key_is_refused_after_the_release_wait() {
    let ck = Checkpoints::start(MemoryStore::new(), CheckpointConfig::default()).await.unwrap();
    let sup = Supervisor::start("key-in-use", SupervisorSpec::dynamic(None)).await.unwrap();
    let first = sup.start_child(claimant("holder", &ck)).await.expect("the first claimant gets the key");

    let asked = Instant::now();
    let refused = sup.start_child(claimant("intruder", &ck)).await;
    let waited = asked.elapsed();
    let why = format!("{:?}", refused.expect_err("a second live claimant is refused"));
    assert!(why.contains("inuse/shared") && why.contains("already used by live actor"), "{why}");
    assert!(waited >= Duration::from_millis(500), "it waited for the holder to go first: {waited:?}");

    // The holder goes: the key is free for the next claimant.
    sup.terminate_child(&first.id).await.unwrap();
    sup.start_child(claimant("successor", &ck)).await.expect("the key is free once its holder stopped");
    sup.shutdown().await;
}
