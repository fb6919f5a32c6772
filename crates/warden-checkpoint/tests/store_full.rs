//! A store that runs out of room at run time: a child process (this test binary) limits its
//! own file size with `RLIMIT_FSIZE` (writes past it fail with EFBIG, as a full disk fails with
//! ENOSPC), opens a redb store and persists 8 KiB events until a commit fails. The failure
//! must reach the handler as an error (so the command is not acknowledged) and the service's
//! event stream as `CommitFailed`; the service must keep serving reads; and the parent, opening
//! the store afterwards without a limit, must find every acknowledged event and nothing else.

use std::process::Command;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use warden_checkpoint::{
    Checkpoint, CheckpointConfig, CheckpointEvent, Checkpointed, Checkpoints, EventSourced, SnapshotPolicy,
};
use warden_core::{ChildSpec, Supervisor, SupervisorSpec, WorkerSpec};

const DIR_VAR: &str = "WARDEN_STORE_FULL_DIR";
const EVENT_BYTES: usize = 8 * 1024;

#[derive(Clone)]
struct Log;

enum Msg {
    /// Persists one event; answers the new length or the persist error.
    Append(RpcReplyPort<Result<u64, String>>),
    Len(RpcReplyPort<u64>),
}

#[derive(Serialize, Deserialize)]
struct Entry(String);

impl Actor for Log {
    type Msg = Msg;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(&self, _: ActorRef<Msg>, msg: Msg, len: &mut u64) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Append(reply) => {
                let r =
                    self.persist(len, Entry("e".repeat(EVENT_BYTES))).await.map(|_| *len).map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Msg::Len(reply) => {
                let _ = reply.send(*len);
            }
        }
        Ok(())
    }
}

impl Checkpoint for Log {
    type Snapshot = u64;
    fn snapshot(&self, len: &u64) -> u64 {
        *len
    }
    fn restore(&self, len: &mut u64, s: u64) {
        *len = s;
    }
}

impl EventSourced for Log {
    type Event = Entry;
    fn apply(&self, len: &mut u64, _: &Entry) {
        *len += 1;
    }
}

fn spec(ck: &Checkpoints) -> WorkerSpec<Msg> {
    // No snapshots: every acknowledged event must come back from the journal.
    ChildSpec::worker("log", Checkpointed::durable(Log, ck, "log", SnapshotPolicy::new().on_stop(false)), ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of a_full_store_fails_commits_and_keeps_what_was_acknowledged"]
async fn child_with_file_size_limit() {
    use nix::sys::resource::{setrlimit, Resource};
    use nix::sys::signal::{signal, SigHandler, Signal};
    let Ok(dir) = std::env::var(DIR_VAR) else { panic!("{DIR_VAR} unset: run by the parent test only") };
    let ck = Checkpoints::open_dir(&dir, CheckpointConfig::default()).await.expect("open");
    let file = std::path::Path::new(&dir).join(warden_checkpoint::redb_store::FILE_NAME);
    let size = std::fs::metadata(&file).expect("store file").len();
    // Writes past the limit fail with EFBIG instead of killing the process with SIGXFSZ.
    // SAFETY: ignoring a signal installs no handler code.
    unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) }.expect("ignore SIGXFSZ");
    let limit = size + 256 * 1024;
    setrlimit(Resource::RLIMIT_FSIZE, limit, limit).expect("setrlimit");
    let mut events = ck.subscribe();
    let s = spec(&ck);
    let h = s.handle();
    let sup = Supervisor::start("full", SupervisorSpec::one_for_one().child(s)).await.expect("start");
    let t = Some(Duration::from_secs(30));
    let mut acked = 0u64;
    let mut failure = None;
    for _ in 0..4096 {
        match h.call(Msg::Append, t).await.expect("answer") {
            Ok(n) => {
                acked = n;
                println!("ack {n}");
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("a commit failed within 32 MiB of events");
    println!("failed {failure}");
    let mut commit_failed = false;
    while let Ok(e) = events.try_recv() {
        commit_failed |= matches!(e, CheckpointEvent::CommitFailed { .. });
    }
    println!("commit_failed_event {commit_failed}");
    // Nothing unacknowledged was applied, and the service still answers reads.
    println!("len_after {}", h.call(Msg::Len, t).await.expect("len"));
    println!("listed {}", ck.keys().await.map(|k| k.len()).unwrap_or(usize::MAX));
    println!("acked_total {acked}");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_fails_commits_and_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_with_file_size_limit", "--nocapture", "--test-threads", "1"])
        .env(DIR_VAR, dir.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let field = |name: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no `{name}` line in:\n{stdout}"))
            .to_string()
    };
    let acked: u64 = field("acked_total").parse().unwrap();
    assert!(acked > 0, "some events fitted before the limit");
    let failed = field("failed");
    assert!(failed.contains("commit") && failed.contains("File too large"), "{failed}");
    assert_eq!(field("commit_failed_event"), "true");
    assert_eq!(field("len_after"), acked.to_string(), "the failed event was not applied");
    assert_eq!(field("listed"), "1", "reads still work after the failure");
    // A new process, no limit: exactly the acknowledged events come back.
    let ck = Checkpoints::open_dir(dir.path(), CheckpointConfig::default()).await.expect("reopen");
    let s = spec(&ck);
    let h = s.handle();
    let sup = Supervisor::start("full-check", SupervisorSpec::one_for_one().child(s)).await.expect("start");
    assert_eq!(h.call(Msg::Len, Some(Duration::from_secs(30))).await.unwrap(), acked);
    sup.shutdown().await;
    ck.close().await.unwrap();
}
