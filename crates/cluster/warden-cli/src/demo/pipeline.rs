//! The `pipeline` demo's actors: a supervised worker pool on every node, and a durable
//! `results` singleton (its journal in the group's Raft log) where each job's completion is
//! recorded once.
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
use warden_checkpoint::{Checkpoint, Checkpointed, EventSourced, SnapshotPolicy};
use warden_cluster::singleton::Locator;
use warden_cluster::{SingletonContext, SingletonSpec};
use warden_pool::{Job, PoolError, PoolSpec, Routing};

use super::bank::Served;
use super::wire::{self, CallExt};

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

/// The `results` singleton's messages (they cross nodes; payloads are [`wire`]-encoded).
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum ResultsMsg {
    /// Record job `id` as completed; a [`ResultsReply`].
    #[rpc]
    Complete(u64, RpcReplyPort<Vec<u8>>),
    /// The record ([`Record`]).
    #[rpc]
    Summary(RpcReplyPort<Vec<u8>>),
    /// How many jobs are recorded, and where it runs ([`ResultsCount`]).
    #[rpc]
    Count(RpcReplyPort<Vec<u8>>),
    /// A fault: panic in the handler.
    Panic,
    /// A fault: a handler that never returns.
    Hang,
}

/// The answer to [`ResultsMsg::Complete`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ResultsReply {
    /// The first completion of this job.
    New(Served),
    /// The job was already recorded (a retry after its node was lost).
    Duplicate(Served),
    /// The write failed.
    Refused(String),
}

/// The answer to [`ResultsMsg::Count`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ResultsCount {
    /// Jobs recorded.
    pub count: u64,
    /// Which instance answered.
    pub served: Served,
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
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ResultsEvent {
    /// A job completed for the first time.
    Completed(u64),
    /// A job completed again.
    Duplicate(u64),
}

/// Applies one event to the record (the recorder's rule, also the checker's replay).
pub fn apply_results(st: &mut Record, event: &ResultsEvent) {
    match event {
        ResultsEvent::Completed(id) => {
            st.completed.insert(*id);
        }
        ResultsEvent::Duplicate(_) => st.duplicates += 1,
    }
}

/// The results singleton.
#[derive(Clone)]
pub struct Results {
    ctx: SingletonContext,
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
        let served = Served { node: self.ctx.node_name().to_string(), token: self.ctx.token() };
        match msg {
            ResultsMsg::Complete(id, reply) => {
                let duplicate = st.completed.contains(&id);
                let event = if duplicate { ResultsEvent::Duplicate(id) } else { ResultsEvent::Completed(id) };
                let (answer, restart) = match self.persist(st, event).await {
                    Ok(_) if duplicate => (ResultsReply::Duplicate(served), None),
                    Ok(_) => (ResultsReply::New(served), None),
                    Err(e) => (ResultsReply::Refused(e.to_string()), e.restart_required().then_some(e)),
                };
                let _ = reply.send(wire::encode(&answer));
                // A refused or doubtful write leaves this incarnation unable to write: restart
                // it (which reopens the key) instead of refusing every job from then on.
                if let Some(e) = restart {
                    return Err(e.into());
                }
            }
            ResultsMsg::Summary(reply) => {
                let _ = reply.send(wire::encode(&*st));
            }
            ResultsMsg::Count(reply) => {
                let _ = reply.send(wire::encode(&ResultsCount { count: st.completed.len() as u64, served }));
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
        apply_results(st, event);
    }
}

/// The checkpoint key of the results singleton.
pub const RESULTS_KEY: &str = "pipeline/results";

/// The pipeline's singleton: `results`.
pub fn singletons() -> Vec<SingletonSpec> {
    vec![SingletonSpec::new("results", |ctx: &SingletonContext| {
        let policy = SnapshotPolicy::new().every_messages(500).retain(2);
        (Checkpointed::durable(Results { ctx: ctx.clone() }, ctx.checkpoints(), RESULTS_KEY, policy), ())
    })
    .checkpoint_key(RESULTS_KEY)
    .deadline(Duration::from_secs(3))]
}

/// How a job ended.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Computed and recorded.
    Completed,
    /// The job itself failed on every attempt (a poison job).
    Failed {
        /// How many replicas tried it.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// Not done here: try elsewhere.
    Retry(String),
}

/// Runs job `id` on this node's pool and records it.
pub async fn run_job(pool: &warden_pool::Pool<u64, u64>, locator: &Locator, id: u64) -> JobOutcome {
    match pool.call(id).await {
        Ok(sum) if sum == checksum(id) => {}
        Ok(sum) => return JobOutcome::Retry(format!("job {id} computed {sum}, expected {}", checksum(id))),
        Err(PoolError::Failed { attempts, last, .. }) => return JobOutcome::Failed { attempts, last },
        Err(e) => return JobOutcome::Retry(e.to_string()),
    }
    let Some(results) = locator.find::<ResultsMsg>("results") else {
        return JobOutcome::Retry("the results recorder is moving".into());
    };
    let call = results.call(|port| ResultsMsg::Complete(id, port), Some(Duration::from_secs(3))).await;
    match call.ok().and_then(CallExt::success).map(|b| wire::decode::<ResultsReply>(&b)) {
        Some(Ok(ResultsReply::New(_) | ResultsReply::Duplicate(_))) => JobOutcome::Completed,
        Some(Ok(ResultsReply::Refused(e))) => JobOutcome::Retry(format!("recording job {id}: {e}")),
        Some(Err(e)) => JobOutcome::Retry(format!("recording job {id}: {e}")),
        None => JobOutcome::Retry(format!("recording job {id}: no answer")),
    }
}
