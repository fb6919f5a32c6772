//! A demo node process (`warden demo-node`, started by `warden demo`): a warden cluster node
//! with the demo's singletons (and, for the pipeline, a worker pool), driven by its launcher
//! through stdin and reporting on stdout, in the typed lines of [`protocol`](super::protocol).
//!
//! Reports go through one writer task (a bounded queue of [`OUT_QUEUE`] lines; when it is
//! full a report is dropped and counted, never waited for). Requests are served concurrently,
//! at most [`MAX_CONCURRENT_REQUESTS`] at a time (more wait in the reader).
//!
//! The node ends when its stdin closes (its launcher is gone), on SIGTERM, after an orderly
//! `leave`, and, on Linux, when its launcher dies (parent-death signal, set before this
//! program runs).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::{FramedRead, LinesCodec};
use warden_cluster::{Node, NodeConfig};
use warden_core::{Supervisor, SupervisorEvent, SupervisorSpec};

use super::gateway::Gateway;
use super::pipeline::{self, Faults};
use super::protocol::{next_line, Op, Report, Request, MAX_LINE};
use super::{bank, Demo};

/// Reports waiting for stdout.
pub const OUT_QUEUE: usize = 8192;
/// Requests served at once.
pub const MAX_CONCURRENT_REQUESTS: usize = 1024;
/// How long a node keeps trying to bind its address (its network namespace may not be ready).
pub const BIND_WAIT: Duration = Duration::from_secs(10);

/// What a demo node is started with.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Which demo.
    pub demo: Demo,
    /// The node's name.
    pub name: String,
    /// The cluster cookie.
    pub cookie: String,
    /// The address to listen on.
    pub bind: IpAddr,
    /// Its port.
    pub port: u16,
    /// Members to join through (a node with no past).
    pub join: Vec<SocketAddr>,
    /// Found the group (the first node's first start).
    pub found: bool,
    /// Where its Raft log lives.
    pub data_dir: PathBuf,
    /// Accounts (bank).
    pub accounts: usize,
    /// How many nodes the group's first placement waits for.
    pub min_members: usize,
}

/// The node's reports, in order, through one writer.
#[derive(Clone)]
pub struct Out {
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

impl Out {
    fn start() -> Out {
        let (tx, mut rx) = mpsc::channel::<String>(OUT_QUEUE);
        tokio::spawn(async move {
            let mut stdout = tokio::io::stdout();
            while let Some(line) = rx.recv().await {
                if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                    return;
                }
            }
        });
        Out { tx, dropped: Arc::new(AtomicU64::new(0)) }
    }

    /// Queues one report (dropped and counted if the queue is full).
    pub fn send(&self, report: &Report) {
        let mut line = serde_json::to_string(report).unwrap_or_default();
        line.push('\n');
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One line from the launcher: its request, or the report that refuses it (a line longer than
/// [`MAX_LINE`], or one that is not a request). The codec skips the rest of a long line, so
/// the lines after it are read as usual.
fn read_request(line: Result<String, tokio_util::codec::LinesCodecError>) -> Result<Request, Report> {
    let line = line.map_err(|e| Report::BadRequest { what: format!("a request line: {e}") })?;
    serde_json::from_str(&line).map_err(|e| Report::BadRequest { what: format!("bad request: {e}") })
}

/// Forwards a supervisor's crash and restart events.
pub fn forward(mut events: tokio::sync::broadcast::Receiver<SupervisorEvent>, node: String, out: Out) {
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(SupervisorEvent::ChildExited { path, reason, .. }) if !reason.is_normal() => {
                    out.send(&Report::Crash {
                        node: node.clone(),
                        actor: path.name().to_string(),
                        kind: reason.kind().to_string(),
                        reason: reason.to_string(),
                    })
                }
                Ok(SupervisorEvent::ChildRestarted { path, .. }) => {
                    out.send(&Report::Restarted { node: node.clone(), actor: path.name().to_string() })
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

async fn start_node(s: &NodeSettings, specs: Vec<warden_cluster::SingletonSpec>) -> anyhow::Result<Node> {
    let deadline = Instant::now() + BIND_WAIT;
    loop {
        let mut config = NodeConfig::new(s.name.clone(), s.cookie.clone()).data_dir(&s.data_dir);
        config.transport.bind = s.bind;
        config.transport.port = s.port;
        config.join = s.join.clone();
        config.found = s.found;
        config = config.min_members(s.min_members);
        match Node::start(config, specs.clone()).await {
            Ok(node) => return Ok(node),
            Err(e @ warden_cluster::ClusterError::Start { .. }) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "cannot listen yet; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).context("starting the node"),
        }
    }
}

/// Runs the node until its launcher goes away, it gets SIGTERM, or it has left the group.
pub async fn run(s: NodeSettings) -> anyhow::Result<()> {
    let out = Out::start();
    let specs = match s.demo {
        Demo::Bank => bank::singletons(s.accounts),
        Demo::Pipeline => pipeline::singletons(),
    };
    let node = start_node(&s, specs).await?;

    let mut peer_events = node.transport().subscribe();
    let (o, me) = (out.clone(), s.name.clone());
    tokio::spawn(async move {
        loop {
            match peer_events.recv().await {
                Ok(e) => o.send(&Report::Peer { node: me.clone(), event: e }),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    });
    let mut cluster_events = node.subscribe();
    let (o, me) = (out.clone(), s.name.clone());
    let locator_node = Arc::new(node);
    let forwarding = locator_node.clone();
    tokio::spawn(async move {
        loop {
            match cluster_events.recv().await {
                Ok(e) => {
                    if let warden_cluster::ClusterEvent::Started { name, .. } = &e {
                        if let Some(sup) = forwarding.supervisor(name) {
                            forward(sup.subscribe(), me.clone(), o.clone());
                        }
                    }
                    o.send(&Report::Cluster { node: me.clone(), event: e.clone() })
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    });
    let node = locator_node;

    // The pipeline's pool runs on every node, under the node's own supervisor.
    let faults = Arc::new(Faults::default());
    let (pool, app) = match s.demo {
        Demo::Pipeline => {
            let (pool_child, pool) = pipeline::pool(faults.clone()).build();
            let app =
                Supervisor::start(&format!("{}-app", s.name), SupervisorSpec::one_for_one().child(pool_child)).await?;
            forward(app.subscribe(), s.name.clone(), out.clone());
            (Some(pool), Some(app))
        }
        Demo::Bank => (None, None),
    };
    out.send(&Report::Ready {
        node: s.name.clone(),
        addr: node.addr().to_string(),
        pid: std::process::id(),
        id: node.id(),
    });

    let gateway =
        Arc::new(Gateway { demo: s.demo, accounts: s.accounts, faults, pool, app: app.clone(), node: node.clone() });
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
    let mut lines = FramedRead::new(tokio::io::stdin(), LinesCodec::new_with_max_length(MAX_LINE));
    let mut errored = false;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut leaving = false;
    loop {
        tokio::select! {
            line = next_line(&mut lines, &mut errored) => {
                let Some(line) = line else { break }; // the launcher is gone
                let req = match read_request(line) {
                    Ok(r) => r,
                    Err(refused) => {
                        out.send(&refused);
                        continue;
                    }
                };
                if req.op == Op::Leave {
                    leaving = true;
                    out.send(&Report::Reply { id: req.id, answer: super::protocol::Answer::Done });
                    break;
                }
                let (gateway, out) = (gateway.clone(), out.clone());
                let served = spawn_bounded(&slots, async move {
                    let answer = gateway.serve(req.op).await;
                    out.send(&Report::Reply { id: req.id, answer });
                });
                if !served.await {
                    break;
                }
            }
            _ = term.recv() => break,
        }
    }
    if let Some(app) = app {
        app.shutdown().await;
    }
    drop(gateway);
    if leaving {
        node.leave().await.context("leaving the group")?;
    } else {
        node.stop().await;
    }
    Ok(())
}

/// Serves one request on a task of its own once one of `slots` is free; the caller (the
/// reader) waits until then, so at most that many requests are served at once. `false` if the
/// slots are closed.
async fn spawn_bounded(slots: &Arc<Semaphore>, serve: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
    let Ok(permit) = slots.clone().acquire_owned().await else { return false };
    tokio::spawn(async move {
        serve.await;
        drop(permit);
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_requests_than_the_slots_are_served_at_once_and_the_rest_follow() {
        use std::sync::atomic::AtomicUsize;
        const SLOTS: usize = 4;
        const REQUESTS: usize = SLOTS + 3;
        let slots = Arc::new(Semaphore::new(SLOTS));
        let (open, gate) = tokio::sync::watch::channel(false);
        let (running, most, done) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let reader = {
            let (slots, running, most, done) = (slots.clone(), running.clone(), most.clone(), done.clone());
            tokio::spawn(async move {
                let mut taken = 0;
                for _ in 0..REQUESTS {
                    let (mut gate, running, most, done) = (gate.clone(), running.clone(), most.clone(), done.clone());
                    let served = spawn_bounded(&slots, async move {
                        most.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                        let _ = gate.wait_for(|open| *open).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        done.fetch_add(1, Ordering::SeqCst);
                    });
                    assert!(served.await);
                    taken += 1;
                }
                taken
            })
        };
        // The reader takes SLOTS requests, then waits for a slot.
        let by = Instant::now() + Duration::from_secs(30);
        while running.load(Ordering::SeqCst) < SLOTS {
            assert!(Instant::now() < by, "the first {SLOTS} requests did not start");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(running.load(Ordering::SeqCst), SLOTS, "no more than the slots run at once");
        assert!(!reader.is_finished(), "the reader waits for a slot");
        open.send_replace(true);
        assert_eq!(reader.await.expect("the reader ends"), REQUESTS, "none is refused");
        while done.load(Ordering::SeqCst) < REQUESTS {
            assert!(Instant::now() < by, "not every request was served");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(most.load(Ordering::SeqCst), SLOTS);
    }

    #[tokio::test]
    async fn a_request_line_past_max_line_is_refused_and_the_next_one_read() {
        let good = serde_json::to_string(&Request { id: 7, op: Op::Observe }).unwrap();
        let mut input = "x".repeat(MAX_LINE + 1).into_bytes();
        input.extend_from_slice(format!("\n{good}\nnot json\n").as_bytes());
        let mut lines = FramedRead::new(&input[..], LinesCodec::new_with_max_length(MAX_LINE));
        let (mut errored, mut read) = (false, Vec::new());
        while let Some(line) = next_line(&mut lines, &mut errored).await {
            read.push(read_request(line));
        }
        assert_eq!(read.len(), 3, "{read:?}");
        assert!(matches!(&read[0], Err(Report::BadRequest { what }) if what.contains("line length")), "{:?}", read[0]);
        assert_eq!(read[1], Ok(Request { id: 7, op: Op::Observe }), "the line after a long one is read");
        assert!(matches!(&read[2], Err(Report::BadRequest { what }) if what.contains("bad request")));
    }

    #[test]
    fn a_full_report_queue_drops_and_counts_instead_of_waiting() {
        // No writer: nothing drains the queue, as when stdout blocks.
        let (tx, rx) = mpsc::channel::<String>(OUT_QUEUE);
        let out = Out { tx, dropped: Arc::new(AtomicU64::new(0)) };
        let report = Report::Ready { node: "n1".into(), addr: String::new(), pid: 1, id: 1 };
        for _ in 0..OUT_QUEUE + 3 {
            out.send(&report);
        }
        assert_eq!(out.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(rx.len(), OUT_QUEUE, "the queue holds its bound, no more");
    }
}
