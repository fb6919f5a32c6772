//! A counter that survives its own crashes, and the end of its process.
//!
//! Shows: declaring the checkpointed part of an actor's state (`Checkpoint`) and a snapshot
//! policy; a panic mid-stream and a restart that resumes from the last snapshot (the
//! `StateRestored` event says which); the recovery point (changes after the last snapshot are
//! lost); a graceful stop that snapshots; and a second run of the example that continues from
//! the first one's number, read back from the redb file.
//!
//! Run: `cargo run --example checkpoint_counter` (twice). The store lives in
//! `$WARDEN_DATA_DIR` or, by default, `warden-example-data/` under the system's temp directory.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use warden::checkpoint::{Checkpoint, CheckpointConfig, Checkpointed, Checkpoints, SnapshotPolicy};
use warden::prelude::*;

#[derive(Clone)]
struct Counter;

enum Msg {
    Add(u64),
    Get(RpcReplyPort<u64>),
    Crash,
}

/// The saved part of the state.
#[derive(Serialize, Deserialize)]
struct Saved {
    total: u64,
}

impl Actor for Counter {
    type Msg = Msg;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0) // a fresh counter; the checkpoint layer then restores the saved total
    }
    async fn handle(&self, _: ActorRef<Msg>, msg: Msg, total: &mut u64) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Add(n) => *total += n,
            Msg::Get(reply) => {
                let _ = reply.send(*total);
            }
            Msg::Crash => panic!("the counter hit a bug"),
        }
        Ok(())
    }
}

impl Checkpoint for Counter {
    type Snapshot = Saved;
    fn snapshot(&self, total: &u64) -> Saved {
        Saved { total: *total }
    }
    fn restore(&self, total: &mut u64, saved: Saved) {
        *total = saved.total;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let dir = std::env::var_os("WARDEN_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("warden-example-data"));
    let checkpoints = Checkpoints::open_dir(&dir, CheckpointConfig::default()).await?;
    println!("store: {}", dir.display());

    // Snapshot every 5 messages and on a graceful stop.
    let policy = SnapshotPolicy::new().every_messages(5);
    let spec = ChildSpec::worker("counter", Checkpointed::new(Counter, &checkpoints, "counter", policy), ());
    let counter = spec.handle();
    let app = Supervisor::start("app", SupervisorSpec::one_for_one().child(spec)).await?;
    let mut events = app.subscribe();

    let start = counter.call(Msg::Get, Some(Duration::from_secs(5))).await?;
    println!("resumed at {start} (0 on the first run)");

    for _ in 0..9 {
        counter.cast(Msg::Add(1))?;
    }
    let before = counter.call(Msg::Get, Some(Duration::from_secs(5))).await?;
    println!("after 9 adds: {before}; the 10th message (this read) triggers a snapshot");
    counter.cast(Msg::Add(1000))?; // not yet in a snapshot when the crash comes
    counter.cast(Msg::Crash)?;
    let after = counter.call(Msg::Get, Some(Duration::from_secs(5))).await?;
    while let Ok(event) = events.try_recv() {
        if let SupervisorEvent::StateRestored { path, from, .. } = event {
            println!("{path} restored snapshot #{} ({} ms old)", from.seq, from.age_ms);
        }
    }
    println!("after the crash: {after} (the +1000 came after the last snapshot and is lost)");

    app.shutdown().await; // snapshots on the way out
    checkpoints.close().await?;
    for info in Checkpoints::open_dir(&dir, CheckpointConfig::default()).await?.list("counter").await? {
        println!("stored snapshot #{}: {} bytes", info.seq, info.size);
    }
    println!("run again: the counter resumes at {after}");
    Ok(())
}
