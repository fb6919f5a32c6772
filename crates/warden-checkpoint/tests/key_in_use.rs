//! A checkpoint key belongs to one live actor at a time: a second actor claiming a key whose
//! holder is alive waits `CLAIM_RELEASE_WAIT` (500 ms) for it to go, then fails to start with
//! `KeyInUse`, naming the key and the holder; once the holder has stopped, the key is free.

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use warden_checkpoint::{Checkpoint, CheckpointConfig, Checkpointed, Checkpoints, MemoryStore, SnapshotPolicy};
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

fn spec(id: &str, ck: &Checkpoints) -> ChildSpec {
    ChildSpec::worker(id, Checkpointed::new(Cell, ck, "inuse/shared", SnapshotPolicy::new()), ())
        .restart(RestartType::Temporary)
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_claimant_of_a_key_is_refused_after_the_release_wait() {
    let ck = Checkpoints::start(MemoryStore::new(), CheckpointConfig::default()).await.unwrap();
    let sup = Supervisor::start("key-in-use", SupervisorSpec::dynamic(None)).await.unwrap();
    let first = sup.start_child(spec("holder", &ck)).await.expect("the first claimant gets the key");

    let asked = Instant::now();
    let refused = sup.start_child(spec("intruder", &ck)).await;
    let waited = asked.elapsed();
    let why = format!("{:?}", refused.expect_err("a second live claimant is refused"));
    assert!(why.contains("inuse/shared") && why.contains("already used by live actor"), "{why}");
    assert!(waited >= Duration::from_millis(500), "it waited for the holder to go first: {waited:?}");

    // The holder goes: the key is free for the next claimant.
    sup.terminate_child(&first.id).await.unwrap();
    sup.start_child(spec("successor", &ck)).await.expect("the key is free once its holder stopped");
    sup.shutdown().await;
}
