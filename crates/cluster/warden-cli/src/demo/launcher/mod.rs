//! `warden demo`: starts the node processes, runs the workload, injects the planned faults,
//! follows what the nodes report, shows progress, checks the invariants (the demo's own, and
//! the checker's over every node's store) and writes the report.
//!
//! Layout: [`net`] (loopback or network namespaces, partitions), [`process`] (the node
//! processes and their lines), [`world`] (what the nodes report, as a pure state machine),
//! [`faults`] (injecting each kind), [`workload`] (the clients and the probe, and the history
//! the checker reads), [`checks`] (quiescence, the demo's invariant, the report),
//! [`observe`] (the observer page's bridge).

pub mod checks;
pub mod faults;
pub mod net;
pub mod observe;
pub mod process;
pub mod workload;
pub mod world;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{broadcast, mpsc, oneshot};

use self::net::Net;
use self::process::{Placement, Running, Spawner};
use self::world::{NodeInfo, Proc, World};
use super::plan::Fault;
use super::protocol::{Answer, ClusterEvent, Op, Report, Request};
use super::report::Report as RunReport;
use super::{Demo, RunSettings};

/// The most requests waiting for their answers at once; past it, a request fails at once.
pub const MAX_PENDING: usize = 65_536;
/// The port every node listens on in namespace mode (each has an address of its own).
pub const NAMESPACE_PORT: u16 = 7400;

/// One node slot: where it runs, and its process if it runs.
pub struct Slot {
    /// Its number (from 1).
    pub index: usize,
    /// Its port.
    pub port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its process.
    pub running: Option<Running>,
}

/// A run's shared state.
pub struct Launcher {
    /// The demo.
    pub demo: Demo,
    /// The run's settings.
    pub settings: RunSettings,
    /// When the launcher started.
    pub start: Instant,
    /// When the workload started (ms since `start`), once it has.
    pub workload_at: AtomicU64,
    world: Mutex<World>,
    slots: Mutex<BTreeMap<String, Slot>>,
    /// The network.
    pub net: Net,
    spawner: Spawner,
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_id: AtomicU64,
    /// A node was started once: only that first start founds the group (`--found`); every
    /// later start joins through the nodes up, or resumes from its data directory.
    founded: AtomicBool,
    /// Protocol steps the nodes report: (node, step).
    pub phases: broadcast::Sender<(String, String)>,
    /// Requests acknowledged so far.
    pub acked: AtomicU64,
    /// Requests failed so far.
    pub failed: AtomicU64,
    /// The last successful request (ms since the workload started; 0: none).
    pub last_success: AtomicU64,
    good_windows: Mutex<std::collections::BTreeSet<u64>>,
    /// Every singleton placed once: the workload may start.
    pub ready: AtomicBool,
    /// The workload's history, for the checker.
    pub history: Mutex<workload::History>,
    /// The node killed last.
    pub last_killed: Mutex<Option<String>>,
    /// The accounts as served at the end (bank), for the checker.
    pub served_books: Mutex<Vec<crate::demo::bank::Book>>,
    /// How the nodes are connected, in words.
    pub net_description: String,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Launcher {
    /// The world, locked.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slots, locked.
    pub fn slots(&self) -> MutexGuard<'_, BTreeMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ms since the launcher started.
    pub fn now(&self) -> u64 {
        ms(self.start.elapsed())
    }

    /// Ms since the workload started.
    pub fn workload_now(&self) -> u64 {
        self.now().saturating_sub(self.workload_at.load(Ordering::Relaxed))
    }

    /// Notes a line (logged, and kept in the report).
    pub fn note(&self, line: String) {
        tracing::info!(target: "warden::demo", "{line}");
        let now = self.now();
        self.world().note(format!("{now} ms: {line}"));
    }

    /// Records a successful request (at workload time).
    pub fn success(&self) {
        let now = self.workload_now().max(1);
        self.last_success.store(now, Ordering::Relaxed);
        self.good_windows.lock().unwrap_or_else(PoisonError::into_inner).insert(now / 250);
    }

    /// The nodes whose processes run (not stopped), by name.
    pub fn up_nodes(&self) -> Vec<String> {
        self.world().nodes.iter().filter(|(_, n)| n.proc == Proc::Up).map(|(name, _)| name.clone()).collect()
    }

    /// A node's cluster address.
    pub fn addr_of(&self, name: &str) -> Option<SocketAddr> {
        let slots = self.slots();
        let slot = slots.get(name)?;
        Some(SocketAddr::new(self.net.ip(slot.index), slot.port))
    }

    /// The pid of a running node.
    pub fn pid_of(&self, name: &str) -> Option<u32> {
        self.slots().get(name).and_then(|s| s.running.as_ref().map(|r| r.pid))
    }

    /// Sends `op` to node `name` and waits for its answer (`None`: no answer in time, the
    /// node is not running, or too many requests wait).
    pub async fn request(&self, name: &str, op: Op, timeout: Duration) -> Option<Answer> {
        let stdin = self.slots().get(name)?.running.as_ref()?.stdin.clone();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.len() >= MAX_PENDING {
                return None;
            }
            pending.insert(id, tx);
        }
        let line = serde_json::to_string(&Request { id, op }).ok()?;
        if stdin.try_send(line).is_err() {
            self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
            return None;
        }
        let answer = tokio::time::timeout(timeout, rx).await.ok().and_then(Result::ok);
        if answer.is_none() {
            self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        }
        answer
    }

    /// A fresh id (transfers, jobs).
    pub fn fresh_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The addresses of the other nodes that have a process, to join through (none: with a
    /// past in its data directory, the node resumes from it; the run's first start founds).
    fn join_list(&self, except: &str) -> Vec<SocketAddr> {
        let names: Vec<String> =
            self.slots().iter().filter(|(n, s)| *n != except && s.running.is_some()).map(|(n, _)| n.clone()).collect();
        names.iter().filter_map(|n| self.addr_of(n)).collect()
    }

    /// Starts (or restarts) node `name` in its slot; `join`: through the other nodes.
    pub fn spawn(&self, name: &str) -> anyhow::Result<()> {
        let join = self.join_list(name);
        let placement = {
            let slots = self.slots();
            let slot = slots.get(name).with_context(|| format!("no node {name}"))?;
            Placement {
                name: name.to_string(),
                index: slot.index,
                ip: self.net.ip(slot.index),
                port: slot.port,
                data_dir: slot.data_dir.clone(),
                join,
                found: !self.founded.swap(true, Ordering::Relaxed),
            }
        };
        let running = self.spawner.spawn(&placement, &self.net)?;
        let pid = running.pid;
        if let Some(slot) = self.slots().get_mut(name) {
            slot.running = Some(running);
        }
        let now = self.workload_now();
        let mut w = self.world();
        let node = w.nodes.entry(name.to_string()).or_insert(NodeInfo {
            proc: Proc::Up,
            id: None,
            back_at: None,
            serving: false,
        });
        node.proc = Proc::Up;
        node.back_at = Some(now);
        node.serving = false;
        drop(w);
        // A partition under way holds for the new process too.
        faults::reapply_cut(self, name, pid);
        Ok(())
    }

    /// Adds a slot for a new node (a join).
    pub fn add_slot(&self, name: &str, base: &Path) -> anyhow::Result<()> {
        let mut slots = self.slots();
        let index = slots.values().map(|s| s.index).max().unwrap_or(0) + 1;
        let port = if self.net.partitions() { NAMESPACE_PORT } else { free_port()? };
        slots.insert(name.to_string(), Slot { index, port, data_dir: base.join(name), running: None });
        Ok(())
    }

    /// Takes the process of node `name` out of its slot.
    pub fn take_process(&self, name: &str) -> Option<Running> {
        self.slots().get_mut(name).and_then(|s| s.running.take())
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Follows the nodes' reports: answers go to their requests, the rest to the world.
async fn follow(l: Arc<Launcher>, mut reports: mpsc::Receiver<(String, Report)>) {
    while let Some((node, report)) = reports.recv().await {
        match report {
            Report::Reply { id, answer } => {
                if let Some(tx) = l.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id) {
                    let _ = tx.send(answer);
                }
            }
            other => {
                if let Report::Cluster { event: ClusterEvent::Phase { step, .. }, .. } = &other {
                    let _ = l.phases.send((node.clone(), step.as_str().to_string()));
                }
                let now = l.workload_now();
                l.world().apply(&node, &other, now);
            }
        }
    }
}

/// Runs a demo; the report says whether its invariants held.
pub async fn run(
    settings: RunSettings,
    plan: Vec<Fault>,
    (net, net_description): (Net, String),
    interrupted: Arc<AtomicBool>,
) -> anyhow::Result<RunReport> {
    let tmp;
    let base = match &settings.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("creating a temporary data directory")?;
            tmp.path().to_path_buf()
        }
    };
    let (reports_tx, reports_rx) = mpsc::channel(65_536);
    let cookie = format!("warden-demo-{:x}", settings.seed ^ u64::from(std::process::id()));
    let spawner = Spawner {
        exe: std::env::current_exe().context("locating this binary")?,
        demo: settings.demo,
        cookie,
        accounts: settings.accounts,
        min_members: settings.nodes,
        node_logs: settings.node_logs,
        reports: reports_tx,
        warnings: process::NodeWarnings::default(),
    };
    let l = Arc::new(Launcher {
        demo: settings.demo,
        settings: settings.clone(),
        start: Instant::now(),
        workload_at: AtomicU64::new(u64::MAX / 2),
        world: Mutex::new(World::default()),
        slots: Mutex::new(BTreeMap::new()),
        net,
        spawner,
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        founded: AtomicBool::new(false),
        phases: broadcast::channel(1024).0,
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        last_success: AtomicU64::new(0),
        good_windows: Mutex::new(Default::default()),
        ready: AtomicBool::new(false),
        history: Mutex::new(workload::History::default()),
        last_killed: Mutex::new(None),
        served_books: Mutex::new(Vec::new()),
        net_description,
    });
    tokio::spawn(follow(l.clone(), reports_rx));
    let observer = match settings.observe {
        Some(addr) => Some(observe::start(l.clone(), addr).await?),
        None => None,
    };
    let result = drive(&l, &settings, plan, &base, &interrupted).await;
    checks::stop_all(&l).await;
    if let Some(o) = observer {
        o.stop().await;
    }
    let mut report = result?;
    checks::check_stores(&l, &base, &mut report);
    Ok(report)
}

async fn drive(
    l: &Arc<Launcher>,
    settings: &RunSettings,
    plan: Vec<Fault>,
    base: &Path,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<RunReport> {
    let names: Vec<String> = (1..=settings.nodes).map(|i| format!("n{i}")).collect();
    for name in &names {
        l.add_slot(name, base)?;
    }
    // The first node founds the group; the others join it (and each other) as they come.
    l.spawn(&names[0])?;
    checks::wait_ready(l, &names[..1], interrupted).await?;
    for name in &names[1..] {
        l.spawn(name)?;
    }
    checks::wait_ready(l, &names, interrupted).await?;
    checks::wait_placed(l, Duration::from_secs(120), interrupted).await?;
    l.note(format!("cluster ready after {} ms", l.now()));
    l.ready.store(true, Ordering::Relaxed);
    l.workload_at.store(l.now(), Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let workers = workload::start(l, settings, stop.clone());
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !settings.quiet;
    let workload_start = Instant::now();
    let mut plan = plan.into_iter().peekable();
    let mut last_progress = Instant::now();
    while workload_start.elapsed() < settings.duration && !interrupted.load(Ordering::Relaxed) {
        while plan.peek().is_some_and(|f| f.at <= workload_start.elapsed()) {
            if let Some(f) = plan.next() {
                let (l, base) = (l.clone(), base.to_path_buf());
                // Each fault on its own task: a stop-at waits for its step.
                tokio::spawn(async move { faults::inject(&l, &f, &base).await });
            }
        }
        if !settings.quiet && last_progress.elapsed() >= Duration::from_secs(1) {
            checks::progress(l, tty);
            last_progress = Instant::now();
        }
        let last = l.last_success.load(Ordering::Relaxed);
        l.world().settle(l.workload_now(), (last > 0).then_some(last));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    if tty {
        eprintln!();
    }
    anyhow::ensure!(!interrupted.load(Ordering::Relaxed), "interrupted");
    let workload_ms = ms(workload_start.elapsed());
    checks::finish(l, settings, workload_ms, base).await
}

/// Writes the report as JSON.
pub fn write_report(path: &Path, report: &RunReport) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing the report to {}", path.display()))
}

/// The 250 ms windows of the workload with a success.
pub fn good_windows(l: &Launcher) -> std::collections::BTreeSet<u64> {
    l.good_windows.lock().unwrap_or_else(PoisonError::into_inner).clone()
}
