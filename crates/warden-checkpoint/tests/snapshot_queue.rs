//! Snapshots a policy asks for without waiting (every N messages) cannot pile up behind a slow
//! disk: the service holds at most one such snapshot per key waiting for the writer, however
//! many the actor asks for meanwhile (issue 15). A store whose commits wait for a gate plays
//! the slow disk.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use warden_checkpoint::{
    Checkpoint, CheckpointConfig, Checkpointed, Checkpoints, MemoryStore, SnapshotInfo, SnapshotPolicy, Store,
    StoreError, WriteOp,
};
use warden_core::{ChildSpec, Supervisor, SupervisorSpec};

/// A memory store whose commits wait while the gate is closed.
#[derive(Clone, Default)]
struct Gated {
    inner: MemoryStore,
    closed: Arc<(Mutex<bool>, Condvar)>,
}

impl Gated {
    fn set(&self, closed: bool) {
        *self.closed.0.lock().unwrap() = closed;
        self.closed.1.notify_all();
    }
    fn wait_open(&self) {
        let mut closed = self.closed.0.lock().unwrap();
        while *closed {
            closed = self.closed.1.wait(closed).unwrap();
        }
    }
}

impl Store for Gated {
    fn commit(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        self.wait_open();
        self.inner.commit(ops)
    }
    fn snapshots(&self, key: &str) -> Result<Vec<SnapshotInfo>, StoreError> {
        self.inner.snapshots(key)
    }
    fn read_snapshot(&self, key: &str, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.read_snapshot(key, seq)
    }
    fn journal_after(&self, key: &str, after: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.journal_after(key, after)
    }
    fn last_seq(&self, key: &str) -> Result<u64, StoreError> {
        self.inner.last_seq(key)
    }
    fn keys(&self) -> Result<Vec<String>, StoreError> {
        self.inner.keys()
    }
}

#[derive(Clone)]
struct Counter;

enum Msg {
    Add,
    Get(RpcReplyPort<u64>),
}

impl Actor for Counter {
    type Msg = Msg;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(&self, _: ActorRef<Msg>, msg: Msg, n: &mut u64) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Add => *n += 1,
            Msg::Get(r) => {
                let _ = r.send(*n);
            }
        }
        Ok(())
    }
}

impl Checkpoint for Counter {
    type Snapshot = u64;
    fn snapshot(&self, n: &u64) -> u64 {
        *n
    }
    fn restore(&self, n: &mut u64, s: u64) {
        *n = s;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_asked_for_behind_a_stalled_writer_do_not_pile_up() {
    let store = Gated::default();
    let ck = Checkpoints::start(Arc::new(store.clone()), CheckpointConfig::default()).await.unwrap();
    let policy = SnapshotPolicy::new().every_messages(1).on_stop(false);
    let spec = ChildSpec::worker("counter", Checkpointed::new(Counter, &ck, "queue/counter", policy), ());
    let h = spec.handle();
    let app = Supervisor::start("snapshot_queue", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    // The disk stalls; the actor asks for 5,000 snapshots meanwhile.
    store.set(true);
    for _ in 0..5_000 {
        h.cast(Msg::Add).unwrap();
    }
    assert_eq!(h.call(Msg::Get, Some(Duration::from_secs(10))).await.unwrap(), 5_000);
    // Give the snapshot actor time to hand on whatever it was given (it never blocks).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = ck.stats().pending_writes;
    assert!(waiting <= 2, "{waiting} snapshot writes of one key wait behind the stalled disk");
    // The disk comes back: the newest state is what is stored, and what a restart restores
    // (no snapshot on stop: it would hide an older one winning).
    store.set(false);
    ck.flush().await.unwrap();
    assert!(ck.stats().superseded >= 4_000, "{:?}", ck.stats());
    app.terminate_child("counter").await.unwrap();
    app.restart_child("counter").await.unwrap();
    assert_eq!(h.call(Msg::Get, Some(Duration::from_secs(10))).await.unwrap(), 5_000);
    app.shutdown().await;
}
