//! `replicated_commit_per_s` and `replicated_commit_p50_ms` / `_p99_ms`: acknowledged 1 KiB
//! durable events per second across a 3-node cluster, with many writers at once.
//!
//! Each writer is an event-sourced cluster singleton (`Checkpointed::durable` on the node's
//! replicated store), so an event counts only once the write came back from the Raft log:
//! committed by a majority of the three node processes (each one's redb log synced) and
//! applied. This process is one node (founding the group); the other two are this binary in
//! the hidden `bench-node` mode, joining it. All three run the same writer specs, so the
//! writers spread over the three nodes. Once every writer runs somewhere, one call to each
//! (through warden's own routing) has it persist events back to back for the measured time and
//! answer with each write's latency.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use warden_checkpoint::{Checkpoint, Checkpointed, EventSourced, SnapshotPolicy};
use warden_cluster::{Node, NodeConfig, SingletonContext, SingletonSpec};

use crate::demo::report::Spread;

/// The payload of each event (bytes).
pub const EVENT_BYTES: usize = 1024;
/// The nodes of the benchmark's group.
const NODES: usize = 3;
/// The cookie of the benchmark's cluster.
const COOKIE: &str = "bench-commits";
/// How long the three nodes have to form the group and place every writer.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long the measured calls may take beyond the measured time before the run fails.
const ANSWER_SLACK: Duration = Duration::from_secs(20);
/// A warm-up run before the measured one (its writes are not counted).
const WARM_UP: Duration = Duration::from_millis(500);
/// How long a warm-up call may take beyond [`WARM_UP`] before it is asked again.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// The most writers a run may ask for (each is one singleton on every node).
pub const MAX_WRITERS: usize = 4096;

/// A writer's messages.
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum WriterMsg {
    /// Persist events back to back for this many milliseconds; the answer is each write's
    /// latency in microseconds (little-endian `u32`s).
    #[rpc]
    Run(u64, RpcReplyPort<Vec<u8>>),
}

/// One writer: its state is the number of events it journaled.
#[derive(Clone)]
pub struct Writer;

impl Actor for Writer {
    type Msg = WriterMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<WriterMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(&self, _: ActorRef<WriterMsg>, msg: WriterMsg, count: &mut u64) -> Result<(), ActorProcessingErr> {
        let WriterMsg::Run(ms, reply) = msg;
        let end = Instant::now() + Duration::from_millis(ms);
        let payload = serde_bytes::ByteBuf::from(vec![7u8; EVENT_BYTES]);
        let mut latencies = Vec::new();
        while Instant::now() < end {
            let t = Instant::now();
            // A failed write fails the handler: the caller's answer is then missing, and the
            // run fails instead of counting less.
            self.persist(count, payload.clone()).await?;
            latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
        let _ = reply.send(latencies.iter().flat_map(|l| l.to_le_bytes()).collect());
        Ok(())
    }
}

impl Checkpoint for Writer {
    type Snapshot = u64;
    fn snapshot(&self, count: &u64) -> u64 {
        *count
    }
    fn restore(&self, count: &mut u64, saved: u64) {
        *count = saved;
    }
}

impl EventSourced for Writer {
    // As bytes (`bin` in MessagePack), not serde's one integer per byte of a `Vec<u8>`.
    type Event = serde_bytes::ByteBuf;
    fn apply(&self, count: &mut u64, _: &serde_bytes::ByteBuf) {
        *count += 1;
    }
}

fn writer_name(i: usize) -> String {
    format!("bench-writer-{i}")
}

/// The writer specs every node of the benchmark runs.
pub fn writer_specs(writers: usize) -> Vec<SingletonSpec> {
    (0..writers)
        .map(|i| {
            let key = format!("bench/writer-{i}");
            SingletonSpec::new(writer_name(i), {
                let key = key.clone();
                move |ctx: &SingletonContext| {
                    let policy = SnapshotPolicy::new().every_messages(1).retain(1);
                    (Checkpointed::durable(Writer, ctx.checkpoints(), key.clone(), policy), ())
                }
            })
            .checkpoint_key(key)
        })
        .collect()
}

/// A peer node process, killed when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_peer(name: &str, join: std::net::SocketAddr, dir: &Path, writers: usize) -> anyhow::Result<Peer> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let child = Command::new(exe)
        .args(["bench-node", "--name", name, "--join", &join.to_string()])
        .arg("--data-dir")
        .arg(dir.join(name))
        .args(["--writers", &writers.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting a peer node")?;
    Ok(Peer(child))
}

/// What one measured run gave.
pub struct Commits {
    /// Acknowledged events per second over the measured time, all writers together.
    pub per_s: f64,
    /// Each acknowledged write's latency.
    pub latency_ms: Spread,
    /// Writers, and on how many nodes they ran.
    pub writers: usize,
    /// The nodes that hosted writers.
    pub hosting_nodes: usize,
}

/// Calls every writer to persist for `run`; each answer's latencies.
async fn run_all(node: &Node, writers: usize, run: Duration) -> anyhow::Result<Vec<Vec<u32>>> {
    let calls = (0..writers).map(|i| {
        let name = writer_name(i);
        let writer = node.locate::<WriterMsg>(&name);
        async move {
            let writer = writer.with_context(|| format!("{name} is not placed"))?;
            let ms = run.as_millis() as u64;
            match writer.call(|port| WriterMsg::Run(ms, port), Some(run + ANSWER_SLACK)).await {
                Ok(ractor::rpc::CallResult::Success(bytes)) => Ok(bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect::<Vec<u32>>()),
                Ok(other) => anyhow::bail!("{name} did not answer its run ({other:?})"),
                Err(e) => anyhow::bail!("{name} could not be called: {e}"),
            }
        }
    });
    futures::future::try_join_all(calls).await
}

/// Has every writer write for [`WARM_UP`], asking each again (it may still be starting on its
/// node, where a call to it is dropped) until it answers or `by` has passed.
async fn warm_up(node: &Node, writers: usize, by: Instant) -> anyhow::Result<()> {
    let each = (0..writers).map(|i| async move {
        let name = writer_name(i);
        loop {
            let answer = match node.locate::<WriterMsg>(&name) {
                Some(w) => {
                    w.call(|port| WriterMsg::Run(WARM_UP.as_millis() as u64, port), Some(WARM_UP + RETRY_AFTER)).await
                }
                None => Ok(ractor::rpc::CallResult::Timeout),
            };
            if matches!(answer, Ok(ractor::rpc::CallResult::Success(_))) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < by, "{name} did not answer within {READY_WITHIN:?} of the start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    futures::future::try_join_all(each).await.context("the warm-up run")?;
    Ok(())
}

/// Runs the benchmark: this process founds a 3-node group with `writers` writers, and every
/// writer persists 1 KiB events back to back for `measure`.
pub async fn measure(writers: usize, measure: Duration) -> anyhow::Result<Commits> {
    anyhow::ensure!((1..=MAX_WRITERS).contains(&writers), "--commit-writers {writers}: give 1 to {MAX_WRITERS}");
    let dir = tempfile::tempdir().context("a data directory for the benchmark's nodes")?;
    // The first placement waits for all three, so no writer moves while it is measured.
    let config = NodeConfig::new("commit-n1", COOKIE).data_dir(dir.path().join("commit-n1")).found().min_members(NODES);
    let node = Node::start(config, writer_specs(writers)).await.context("starting the benchmark's first node")?;
    let mut peers = [
        spawn_peer("commit-n2", node.addr(), dir.path(), writers)?,
        spawn_peer("commit-n3", node.addr(), dir.path(), writers)?,
    ];
    let ready_by = Instant::now() + READY_WITHIN;
    loop {
        let voters = node.membership().voters.len();
        let placed = (0..writers).filter(|i| node.locate::<WriterMsg>(&writer_name(*i)).is_some()).count();
        if voters == NODES && placed == writers {
            break;
        }
        for peer in &mut peers {
            if let Ok(Some(status)) = peer.0.try_wait() {
                anyhow::bail!("a peer node of the benchmark exited ({status}) before the group was ready");
            }
        }
        anyhow::ensure!(
            Instant::now() < ready_by,
            "within {READY_WITHIN:?} the group had {voters} of {NODES} voters and {placed} of {writers} writers placed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hosting_nodes = node.ledger(|l| {
        l.singletons
            .values()
            .filter_map(|s| s.ownership.holder().map(|(n, _)| n))
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    });
    warm_up(&node, writers, ready_by).await?;
    let started = Instant::now();
    let answers = run_all(&node, writers, measure).await.context("the measured run")?;
    let elapsed = started.elapsed().as_secs_f64();
    node.stop().await;
    let latencies: Vec<f64> = answers.iter().flatten().map(|us| *us as f64 / 1000.0).collect();
    anyhow::ensure!(!latencies.is_empty(), "no write was acknowledged");
    Ok(Commits { per_s: latencies.len() as f64 / elapsed, latency_ms: Spread::of(&latencies), writers, hosting_nodes })
}

/// The hidden `bench-node` mode: a node of the benchmark's group running the writer specs,
/// until SIGTERM or SIGKILL.
pub async fn node(
    name: String,
    join: std::net::SocketAddr,
    data_dir: std::path::PathBuf,
    writers: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!((1..=MAX_WRITERS).contains(&writers), "--writers {writers}: give 1 to {MAX_WRITERS}");
    let config = NodeConfig::new(name.clone(), COOKIE).data_dir(data_dir).join(join).min_members(NODES);
    let node = Node::start(config, writer_specs(writers)).await.with_context(|| format!("starting {name}"))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    term.recv().await;
    node.stop().await;
    Ok(())
}
