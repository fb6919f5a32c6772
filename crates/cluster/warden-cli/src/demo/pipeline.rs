//! The `pipeline` demo's actors: a supervised worker pool on every node, and a durable,
//! replicated `results` singleton where each job's completion is recorded once.
//!
//! A job goes to some node, runs on that node's pool (a worker that panics or hangs mid-job is
//! restarted and the job retried on another replica, up to three attempts), and its result is
//! recorded in `results`, keyed by job id. A job whose node dies before it answers is sent
//! again to another node by the client: it may run twice, but `results` records it once (the
//! second record is counted as a suppressed duplicate). Some jobs are poison (every attempt
//! panics) and are reported failed.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use warden_checkpoint::{Checkpoint, Checkpointed, Checkpoints, EventSourced, SnapshotPolicy};
use warden_cluster::singleton::{locate, SingletonSpec};
use warden_core::ChildSpec;
use warden_pool::{Job, PoolError, PoolSpec, Routing};

/// Jobs with an id divisible by this are poison: every attempt panics.
pub const POISON_EVERY: u64 = 97;

/// Faults waiting for the next job on this node's pool.
#[derive(Default)]
pub struct Faults {
    /// Panics to inject.
    pub panics: AtomicU32,
    /// Hangs to inject.
    pub hangs: AtomicU32,
}

/// One worker of the pool.
#[derive(Clone)]
pub struct Worker {
    faults: Arc<Faults>,
}

fn take(counter: &AtomicU32) -> bool {
    counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
}

/// A job's result: a checksum of its id, computed slowly enough to be worth distributing.
pub fn checksum(id: u64) -> u64 {
    let mut h = id ^ 0x9e37_79b9_7f4a_7c15;
    for _ in 0..10_000 {
        h = h.rotate_left(7).wrapping_mul(0x0000_0100_0000_01b3) ^ id;
    }
    h
}

impl Actor for Worker {
    type Msg = Job<u64, u64>;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(&self, _: ActorRef<Self::Msg>, job: Self::Msg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        let id = *job.request();
        if id.is_multiple_of(POISON_EVERY) {
            panic!("poison job {id}");
        }
        if take(&self.faults.panics) {
            panic!("injected fault: panic in a worker during job {id}");
        }
        if take(&self.faults.hangs) {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        job.reply(checksum(id));
        Ok(())
    }
}

/// The node's pool: 3 workers, a 2 s hang deadline, 3 attempts per job.
pub fn pool(faults: Arc<Faults>) -> PoolSpec<u64, u64> {
    PoolSpec::new("workers", Worker { faults }, (), 3)
        .routing(Routing::LeastLoaded)
        .deadline(Duration::from_secs(2))
        .max_attempts(3)
        .intensity(1000, Duration::from_secs(1))
}

/// The `results` singleton's messages (they cross nodes).
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum ResultsMsg {
    /// Record job `id` as completed: `new`, `duplicate` or `error: ...`.
    #[rpc]
    Complete(u64, RpcReplyPort<String>),
    /// The record as JSON ([`Record`]).
    #[rpc]
    Summary(RpcReplyPort<String>),
    /// `{"node": where it runs, "count": jobs recorded}` as JSON.
    #[rpc]
    Count(RpcReplyPort<String>),
    /// A fault: panic in the handler.
    Panic,
    /// A fault: a handler that never returns.
    Hang,
}

/// The journaled record of completed jobs.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// Completed job ids.
    pub completed: BTreeSet<u64>,
    /// Completions of jobs already recorded (a job retried after its node was lost).
    pub duplicates: u64,
}

/// A change of the record.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum ResultsEvent {
    /// A job completed for the first time.
    Completed(u64),
    /// A job completed again.
    Duplicate(u64),
}

/// The results singleton.
#[derive(Clone)]
pub struct Results {
    node: String,
}

impl Actor for Results {
    type Msg = ResultsMsg;
    type State = Record;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<ResultsMsg>, _: ()) -> Result<Record, ActorProcessingErr> {
        Ok(Record::default())
    }
    async fn handle(
        &self,
        _: ActorRef<ResultsMsg>,
        msg: ResultsMsg,
        st: &mut Record,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ResultsMsg::Complete(id, reply) => {
                let (event, answer) = if st.completed.contains(&id) {
                    (ResultsEvent::Duplicate(id), "duplicate")
                } else {
                    (ResultsEvent::Completed(id), "new")
                };
                let answer = match self.persist(st, event).await {
                    Ok(_) => answer.to_string(),
                    Err(e) => format!("error: {e}"),
                };
                let _ = reply.send(answer);
            }
            ResultsMsg::Summary(reply) => {
                let _ = reply.send(serde_json::to_string(&*st).unwrap_or_default());
            }
            ResultsMsg::Count(reply) => {
                let _ = reply.send(serde_json::json!({"node": self.node, "count": st.completed.len()}).to_string());
            }
            ResultsMsg::Panic => panic!("injected fault: panic in the results recorder"),
            ResultsMsg::Hang => std::future::pending::<()>().await,
        }
        Ok(())
    }
}

impl Checkpoint for Results {
    type Snapshot = Record;
    fn snapshot(&self, st: &Record) -> Record {
        st.clone()
    }
    fn restore(&self, st: &mut Record, saved: Record) {
        *st = saved;
    }
}

impl EventSourced for Results {
    type Event = ResultsEvent;
    fn apply(&self, st: &mut Record, event: &ResultsEvent) {
        match event {
            ResultsEvent::Completed(id) => {
                st.completed.insert(*id);
            }
            ResultsEvent::Duplicate(_) => st.duplicates += 1,
        }
    }
}

/// The pipeline's singleton: `results`.
pub fn singletons(checkpoints: &Checkpoints, node: &str) -> Vec<SingletonSpec> {
    let (cp, node) = (checkpoints.clone(), node.to_string());
    vec![SingletonSpec::new::<ResultsMsg>("results", move || {
        let policy = SnapshotPolicy::new().every_messages(500).retain(2);
        ChildSpec::worker(
            "results",
            Checkpointed::durable(Results { node: node.clone() }, &cp, "pipeline/results", policy),
            (),
        )
        .deadline(Duration::from_secs(3))
    })
    .checkpoint_key("pipeline/results")]
}

/// Runs job `id` on this node's pool and records it: `completed`, `failed: ...` (the job
/// itself failed on every attempt) or `error: ...` (try elsewhere).
pub async fn run_job(pool: &warden_pool::Pool<u64, u64>, id: u64) -> String {
    match pool.call(id).await {
        Ok(sum) if sum == checksum(id) => {}
        Ok(sum) => return format!("error: job {id} computed {sum}, expected {}", checksum(id)),
        Err(PoolError::Failed { attempts, last, .. }) => return format!("failed: {attempts} attempts; last: {last}"),
        Err(e) => return format!("error: {e}"),
    }
    let Some(results) = locate::<ResultsMsg>("results") else {
        return "error: the results recorder is moving".into();
    };
    match results.call(|port| ResultsMsg::Complete(id, port), Some(Duration::from_secs(3))).await {
        Ok(ractor::rpc::CallResult::Success(r)) if r == "new" || r == "duplicate" => "completed".into(),
        Ok(ractor::rpc::CallResult::Success(e)) => e,
        Ok(other) => format!("error: recording job {id}: {other:?}"),
        Err(e) => format!("error: recording job {id}: {e}"),
    }
}
