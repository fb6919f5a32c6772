//! What a durable actor does with each outcome a store can give a write: a store that refuses
//! one key's writes fails only that key's writers (not the others committed in the same
//! round), and a write whose outcome is unknown (it may have landed) stops the incarnation
//! from numbering on, so that the restart resumes from what the store holds and no entry is
//! ever written twice under one number.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use warden_checkpoint::{
    Cause, Checkpoint, CheckpointConfig, Checkpointed, Checkpoints, EventSourced, MemoryStore, PersistError,
    SnapshotInfo, SnapshotPolicy, Store, StoreError, WriteOp,
};
use warden_core::{ChildSpec, Supervisor, SupervisorSpec, WorkerSpec};

/// A memory store that refuses the writes of one key, and that can commit a write and then
/// report it as of unknown outcome (an answer lost on the way back).
#[derive(Clone, Default)]
struct Flaky {
    inner: MemoryStore,
    refuse_key: Arc<std::sync::Mutex<Option<String>>>,
    lose_next_answer: Arc<AtomicBool>,
    opens: Arc<AtomicU64>,
}

impl Store for Flaky {
    /// The whole batch at once, as a store without per-op results must: one refused key
    /// refuses the batch.
    fn commit(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        let refused = self.refuse_key.lock().unwrap().clone();
        if let Some(op) = ops.iter().find(|op| refused.as_deref() == Some(&**op.key())) {
            return Err(StoreError::Refused {
                key: op.key().to_string(),
                cause: Cause::new(std::io::Error::other("fenced")),
            });
        }
        self.inner.commit(ops)?;
        if ops.iter().any(|op| matches!(op, WriteOp::Append { .. }))
            && self.lose_next_answer.swap(false, Ordering::SeqCst)
        {
            return Err(StoreError::Uncertain {
                ops: ops.len(),
                cause: Cause::new(std::io::Error::other("the answer was lost")),
            });
        }
        Ok(())
    }
    fn commit_each(&self, ops: &[WriteOp]) -> Vec<Result<(), StoreError>> {
        let refused = self.refuse_key.lock().unwrap().clone();
        ops.iter()
            .map(|op| {
                if refused.as_deref() == Some(&**op.key()) {
                    return Err(StoreError::Refused {
                        key: op.key().to_string(),
                        cause: Cause::new(std::io::Error::other("fenced")),
                    });
                }
                self.inner.commit(std::slice::from_ref(op))?;
                if matches!(op, WriteOp::Append { .. }) && self.lose_next_answer.swap(false, Ordering::SeqCst) {
                    return Err(StoreError::Uncertain {
                        ops: 1,
                        cause: Cause::new(std::io::Error::other("the answer was lost")),
                    });
                }
                Ok(())
            })
            .collect()
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
    fn open_key(&self, _key: &str) -> Result<(), StoreError> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Clone)]
struct Ledger;

enum Msg {
    /// Journals one entry; answers its sequence number or the persist error.
    Add(u64, RpcReplyPort<Result<u64, PersistError>>),
    /// The entries applied so far.
    Entries(RpcReplyPort<Vec<u64>>),
    Crash,
}

#[derive(Serialize, Deserialize)]
struct Added(u64);

impl Actor for Ledger {
    type Msg = Msg;
    type State = Vec<u64>;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<Vec<u64>, ActorProcessingErr> {
        Ok(Vec::new())
    }
    async fn handle(&self, _: ActorRef<Msg>, msg: Msg, st: &mut Vec<u64>) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Add(n, reply) => {
                let _ = reply.send(self.persist(st, Added(n)).await);
            }
            Msg::Entries(reply) => {
                let _ = reply.send(st.clone());
            }
            Msg::Crash => panic!("told to crash"),
        }
        Ok(())
    }
}

impl Checkpoint for Ledger {
    type Snapshot = Vec<u64>;
    fn snapshot(&self, st: &Vec<u64>) -> Vec<u64> {
        st.clone()
    }
    fn restore(&self, st: &mut Vec<u64>, s: Vec<u64>) {
        *st = s;
    }
}

impl EventSourced for Ledger {
    type Event = Added;
    fn apply(&self, st: &mut Vec<u64>, Added(n): &Added) {
        st.push(*n);
    }
}

fn ledger(ck: &Checkpoints, key: &str) -> WorkerSpec<Msg> {
    // No snapshots: everything comes back from the journal.
    ChildSpec::worker(key, Checkpointed::durable(Ledger, ck, key, SnapshotPolicy::new().on_stop(false)), ())
}

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_fails_only_its_own_writes() {
    let store = Flaky::default();
    *store.refuse_key.lock().unwrap() = Some("fenced".into());
    let ck = Checkpoints::start(store.clone(), CheckpointConfig::default()).await.unwrap();
    let (fenced, other) = (ledger(&ck, "fenced"), ledger(&ck, "other"));
    let (hf, ho) = (fenced.handle(), other.handle());
    let sup =
        Supervisor::start("outcomes-refused", SupervisorSpec::one_for_one().child(fenced).child(other)).await.unwrap();
    // Both keys' writes race into the same writer rounds.
    let mut tasks = Vec::new();
    for n in 0..200u64 {
        let (hf, ho) = (hf.clone(), ho.clone());
        tasks.push(tokio::spawn(async move {
            let f = hf.call(|r| Msg::Add(n, r), WAIT);
            let o = ho.call(|r| Msg::Add(n, r), WAIT);
            let (f, o) = tokio::join!(f, o);
            (f.unwrap(), o.unwrap())
        }));
    }
    let mut fenced_failures = 0;
    for t in tasks {
        let (f, o) = t.await.unwrap();
        fenced_failures += f.is_err() as u32;
        assert!(o.is_ok(), "a write of an unrelated key failed: {o:?}");
    }
    assert_eq!(fenced_failures, 200, "every write of the refused key fails");
    assert_eq!(ho.call(Msg::Entries, WAIT).await.unwrap().len(), 200);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_of_unknown_outcome_is_never_numbered_over() {
    let store = Flaky::default();
    let ck = Checkpoints::start(store.clone(), CheckpointConfig::default()).await.unwrap();
    let spec = ledger(&ck, "acct");
    let h = spec.handle();
    let sup = Supervisor::start("outcomes-uncertain", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    assert_eq!(h.call(|r| Msg::Add(10, r), WAIT).await.unwrap().expect("persisted"), 1);
    // The second write lands in the store, but its answer is lost.
    store.lose_next_answer.store(true, Ordering::SeqCst);
    let lost = h.call(|r| Msg::Add(20, r), WAIT).await.unwrap();
    assert!(matches!(lost, Err(PersistError::Store(StoreError::Uncertain { .. }))), "{lost:?}");
    // The incarnation may not number on from a guess.
    let next = h.call(|r| Msg::Add(30, r), WAIT).await.unwrap();
    assert!(matches!(next, Err(PersistError::RestartRequired { .. })), "{next:?}");
    let opens_before = store.opens.load(Ordering::SeqCst);
    h.cast(Msg::Crash).unwrap();
    // The restart reopens the key and resumes from what the store holds: the doubtful entry
    // landed, so it is there, and numbering continues after it.
    assert_eq!(h.call(Msg::Entries, WAIT).await.unwrap(), vec![10, 20]);
    assert!(store.opens.load(Ordering::SeqCst) > opens_before, "the restore reopened the key");
    assert_eq!(h.call(|r| Msg::Add(30, r), WAIT).await.unwrap().expect("persisted"), 3);
    let journal: Vec<u64> = store.journal_after("acct", 0).unwrap().into_iter().map(|(seq, _)| seq).collect();
    assert_eq!(journal, vec![1, 2, 3], "no number was used twice");
    sup.shutdown().await;
}
