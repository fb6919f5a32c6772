//! Checkpoint figures: durable snapshot commit latency next to a bare write + fsync of the
//! same size on the same disk, group commit throughput, restore time of a 1 MiB state, and
//! the cast throughput of a checkpointed actor over an unsupervised ractor actor.
//!
//! Stores live in a temporary directory under `target/` (or the current directory), on the
//! same file system as the sources (ext4 on this machine, never tmpfs: checked by `df`), so
//! `fsync` is real.

use std::io::Write;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use warden_checkpoint::{Checkpoint, CheckpointConfig, Checkpointed, Checkpoints, SnapshotPolicy};
use warden_core::{ChildRef, ChildSpec, Supervisor, SupervisorSpec};

use crate::stats::Samples;

/// An actor whose whole state is a blob of `size` bytes.
#[derive(Clone)]
struct Blob {
    size: usize,
}

pub enum BlobMsg {
    Ping,
    /// Marks the state (its first byte becomes `y`), so a restore is told from a fresh start.
    Mark,
    /// Answers with the state's length, or 0 if it is not marked.
    Get(RpcReplyPort<usize>),
    Panic,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct BlobState {
    data: String,
}

impl Actor for Blob {
    type Msg = BlobMsg;
    type State = BlobState;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<BlobMsg>, _: ()) -> Result<BlobState, ActorProcessingErr> {
        Ok(BlobState { data: "x".repeat(self.size) })
    }
    async fn handle(&self, _: ActorRef<BlobMsg>, msg: BlobMsg, st: &mut BlobState) -> Result<(), ActorProcessingErr> {
        match msg {
            BlobMsg::Ping => {}
            BlobMsg::Mark => st.data.replace_range(0..1, "y"),
            BlobMsg::Get(r) => {
                let _ = r.send(if st.data.starts_with('y') { st.data.len() } else { 0 });
            }
            BlobMsg::Panic => panic!("benchmark restart"),
        }
        Ok(())
    }
}

impl Checkpoint for Blob {
    type Snapshot = BlobState;
    fn snapshot(&self, st: &BlobState) -> BlobState {
        st.clone()
    }
    fn restore(&self, st: &mut BlobState, snap: BlobState) {
        *st = snap;
    }
}

fn data_dir() -> anyhow::Result<tempfile::TempDir> {
    // Under `target/` when run from the workspace (same disk, and a killed run leaves nothing
    // in the source tree); else the current directory.
    let here = std::env::current_dir()?;
    let parent = if here.join("target").is_dir() { here.join("target") } else { here };
    Ok(tempfile::Builder::new().prefix("warden-bench-").tempdir_in(parent)?)
}

async fn blobs(
    ck: &Checkpoints,
    n: usize,
    size: usize,
    policy: SnapshotPolicy,
    tag: &str,
) -> anyhow::Result<(warden_core::SupervisorRef, Vec<ChildRef<BlobMsg>>)> {
    let mut spec = SupervisorSpec::one_for_one().intensity(1_000_000, Duration::from_secs(1));
    let mut handles = Vec::new();
    for i in 0..n {
        let child = ChildSpec::worker(
            format!("b{i}"),
            Checkpointed::new(Blob { size }, ck, format!("{tag}-{i}"), policy.clone()),
            (),
        );
        handles.push(child.handle());
        spec = spec.child(child);
    }
    let sup = Supervisor::start(&format!("bench-{tag}"), spec).await?;
    Ok((sup, handles))
}

/// (warden snapshot commit p50 µs, bare write + fsync p50 µs), same size, same disk, interleaved.
pub async fn snapshot_commit_p50_us(samples: usize) -> anyhow::Result<(f64, f64, f64)> {
    let dir = data_dir()?;
    let ck = Checkpoints::open_dir(dir.path(), CheckpointConfig::default()).await?;
    let (sup, _) = blobs(&ck, 1, 1024, SnapshotPolicy::new().on_demand(true).on_stop(false), "commit").await?;
    ck.snapshot_now("commit-0").await?;
    // The peer writes exactly as many bytes as one stored snapshot (envelope included).
    let size = ck.list("commit-0").await?.last().map(|i| i.size as usize).unwrap_or(1024);
    let path = dir.path().join("peer.bin");
    let payload = vec![0x5au8; size];
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    // The store's own floor: a bare redb transaction inserting the same bytes under a new key,
    // in a database of its own in the same directory, with redb's default durability.
    const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("floor");
    let db = redb::Database::create(dir.path().join("floor.redb"))?;
    let (mut warden, mut peer, mut floor) = (Samples::new(), Samples::new(), Samples::new());
    for i in 0..samples {
        let t = Instant::now();
        ck.snapshot_now("commit-0").await?;
        warden.record(t.elapsed());
        let t = Instant::now();
        file.write_all(&payload)?;
        file.sync_all()?;
        peer.record(t.elapsed());
        let t = Instant::now();
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            table.insert(i as u64, payload.as_slice())?;
        }
        txn.commit()?;
        floor.record(t.elapsed());
    }
    sup.shutdown().await;
    ck.close().await?;
    Ok((warden.percentile_us(0.5), peer.percentile_us(0.5), floor.percentile_us(0.5)))
}

/// Acknowledged durable snapshots per second: `actors` actors with 1 KiB states each asking
/// for snapshots back to back for about `run`.
pub async fn group_commit_per_s(actors: usize, run: Duration) -> anyhow::Result<f64> {
    let dir = data_dir()?;
    let ck = Checkpoints::open_dir(dir.path(), CheckpointConfig::default()).await?;
    let (sup, _) = blobs(&ck, actors, 1024, SnapshotPolicy::new().on_demand(true).on_stop(false), "group").await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..actors {
        let ck = ck.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("group-{i}");
            let mut acked = 0u64;
            while started.elapsed() < run {
                ck.snapshot_now(&key).await?;
                acked += 1;
            }
            anyhow::Ok(acked)
        }));
    }
    let mut total = 0u64;
    for t in tasks {
        total += t.await??;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    sup.shutdown().await;
    ck.close().await?;
    Ok(rate)
}

/// p99 in ms of: panic an actor holding a 1 MiB state -> it answers from the restored state.
pub async fn restore_1mib_p99_ms(restarts: usize) -> anyhow::Result<f64> {
    let dir = data_dir()?;
    let ck = Checkpoints::open_dir(dir.path(), CheckpointConfig::default()).await?;
    let size = 1 << 20;
    let (sup, handles) = blobs(&ck, 1, size, SnapshotPolicy::new().on_demand(true).on_stop(false), "restore").await?;
    let h = &handles[0];
    h.cast(BlobMsg::Mark).map_err(|e| anyhow::anyhow!("{e}"))?;
    // snapshot_now overtakes queued messages: make sure the mark is handled first.
    h.call(BlobMsg::Get, Some(Duration::from_secs(10))).await?;
    ck.snapshot_now("restore-0").await?;
    let mut s = Samples::new();
    for _ in 0..restarts {
        let t = Instant::now();
        h.cast(BlobMsg::Panic).map_err(|e| anyhow::anyhow!("{e}"))?;
        let len = h.call(BlobMsg::Get, Some(Duration::from_secs(10))).await?;
        s.record(t.elapsed());
        anyhow::ensure!(len == size, "restored {len} marked bytes, expected {size}");
    }
    sup.shutdown().await;
    ck.close().await?;
    Ok(s.percentile_us(0.99) / 1000.0)
}

/// Casts per second into a checkpointed actor (snapshot every 1,000 messages, 1 KiB state).
pub async fn checkpointed_cast_rate(n: usize) -> anyhow::Result<f64> {
    let dir = data_dir()?;
    let ck = Checkpoints::open_dir(dir.path(), CheckpointConfig::default()).await?;
    let (sup, handles) = blobs(&ck, 1, 1024, SnapshotPolicy::new().every_messages(1000).on_stop(false), "cast").await?;
    let h = &handles[0];
    let t = Instant::now();
    for _ in 0..n {
        h.cast(BlobMsg::Ping).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    h.call(BlobMsg::Get, None).await?;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    sup.shutdown().await;
    ck.close().await?;
    Ok(rate)
}

/// Casts per second into the same actor, bare and unsupervised.
pub async fn bare_cast_rate(n: usize) -> anyhow::Result<f64> {
    let (a, _) = Actor::spawn(None, Blob { size: 1024 }, ()).await?;
    let t = Instant::now();
    for _ in 0..n {
        a.cast(BlobMsg::Ping)?;
    }
    let _ = a.call(BlobMsg::Get, None).await?;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    a.stop(None);
    Ok(rate)
}
