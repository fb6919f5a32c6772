//! `warden demo`: starts the node processes, runs the workload, injects the planned faults,
//! watches what the nodes report, shows progress, checks the invariant and writes the report.
//!
//! Node processes are this binary in `demo-node` mode, one per node, each in its own process
//! group (so a terminal's Ctrl-C reaches only the launcher, which then stops them in order),
//! with a parent-death signal (SIGKILL) set before they run, and reading their stdin from the
//! launcher: if the launcher dies, even by SIGKILL, the kernel kills them, and a node that
//! somehow survives exits when its stdin closes. No orphans.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::bank::{self, Book, Transfer, INITIAL_BALANCE};
use super::plan::{Fault, Kind};
use super::report::{FaultRecord, Report, Spread};
use super::{Demo, RunSettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    Killed,
    Stopped,
}

struct Proc {
    name: String,
    port: u16,
    state: State,
    child: Option<Child>,
    /// Requests for the node, written to its stdin by a thread of its own (bounded: a node
    /// that stops reading makes requests fail instead of piling up).
    stdin: Option<std::sync::mpsc::SyncSender<String>>,
    /// When it was last resumed or restarted (its own view of its peers is stale until it rejoins).
    back_at: Option<Instant>,
}

/// What the launcher knows, updated from the nodes' reports.
struct World {
    procs: Vec<Proc>,
    /// Singleton -> the nodes reporting it hosted (one, except while a duplicate resolves).
    hosts: BTreeMap<String, Vec<String>>,
    faults: Vec<Open>,
    pending: HashMap<u64, oneshot::Sender<Value>>,
    false_suspicions: u64,
    crashes: u64,
    /// Windows (250 ms) of the workload with a success.
    good_windows: HashSet<u64>,
    last_success: Option<Instant>,
    log: Vec<String>,
    probe: Probe,
}

/// What the probe saw of the key singleton: where it answered from, and its counter.
#[derive(Default)]
struct Probe {
    samples: u64,
    max_count: u64,
    /// Answers whose counter was below one seen before: state lost on a move.
    regressions: u64,
    hosts_seen: Vec<String>,
}

/// A fault being followed.
struct Open {
    rec: FaultRecord,
    kind: Kind,
    injected: Instant,
    /// The crashed actor (node, actor) once detected.
    crashed: Option<(String, String)>,
    /// Singletons its node hosted, still to come back elsewhere.
    displaced: Vec<String>,
    rehomed: Option<Instant>,
    /// It displaced the demo's key singleton (the probe times its return).
    key_displaced: bool,
    /// A restarted node: the nodes that reported it up, and when the last did.
    seen_by: Vec<String>,
    seen_last: Option<Instant>,
}

struct Launcher {
    demo: Demo,
    world: Mutex<World>,
    start: Instant,
    next_id: AtomicU64,
    settings: RunSettings,
    spawner: std::sync::mpsc::Sender<(Command, std::sync::mpsc::Sender<std::io::Result<Child>>)>,
    /// What the nodes print, line by line (bounded: a reader thread waits when it is full).
    lines: mpsc::Sender<(String, String)>,
    data_dir: PathBuf,
    cookie: String,
    /// Requests acknowledged and failed so far (the progress line, the observer).
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// Every singleton placed once: the workload may start (`/health/ready`).
    ready: AtomicBool,
}

/// The bound of the queues between the launcher and each node.
const QUEUE: usize = 4096;

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Launcher {
    fn lock(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn at(&self, t: Instant) -> u64 {
        ms(t.saturating_duration_since(self.start))
    }

    fn note(&self, line: String) {
        tracing::info!(target: "warden::demo", "{line}");
        self.lock().log.push(line);
    }

    /// Starts (or restarts) node `i`.
    fn spawn_node(&self, i: usize) -> anyhow::Result<()> {
        let (name, port, peers) = {
            let w = self.lock();
            let p = &w.procs[i];
            // Each pair of nodes has one seed side: node i connects to the nodes before it.
            let peers: Vec<String> = w.procs[..i].iter().map(|q| format!("127.0.0.1:{}", q.port)).collect();
            (p.name.clone(), p.port, peers)
        };
        let exe = std::env::current_exe().context("locating this binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("demo-node")
            .arg(self.demo.name())
            .args(["--name", &name, "--port", &port.to_string()])
            .args(["--cluster-size", &self.settings.nodes.to_string()])
            .args(["--accounts", &self.settings.accounts.to_string()])
            .arg("--data-dir")
            .arg(self.data_dir.join(&name))
            .env("WARDEN_COOKIE", &self.cookie)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if self.settings.node_logs { Stdio::inherit() } else { Stdio::null() })
            .process_group(0);
        for p in peers {
            cmd.args(["--connect", &p]);
        }
        let parent = std::process::id() as i32;
        // SAFETY: runs in the forked child before exec; prctl and getppid are async-signal-safe
        // system calls, and the error path only builds an io::Error.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                if nix::unistd::getppid().as_raw() != parent {
                    return Err(std::io::Error::other("the launcher is already gone"));
                }
                Ok(())
            });
        }
        // The parent-death signal fires when the thread that forked exits: fork from one
        // thread that lives as long as the launcher.
        let (tx, rx) = std::sync::mpsc::channel();
        self.spawner.send((cmd, tx)).map_err(|_| anyhow::anyhow!("the spawner thread is gone"))?;
        let mut child =
            rx.recv().context("the spawner thread is gone")?.with_context(|| format!("starting node {name}"))?;
        let stdout = child.stdout.take().context("node stdout")?;
        let stdin = child.stdin.take().context("node stdin")?;
        let (in_tx, in_rx) = std::sync::mpsc::sync_channel::<String>(QUEUE);
        std::thread::spawn(move || {
            let mut stdin = stdin;
            for line in in_rx {
                if writeln!(stdin, "{line}").and_then(|_| stdin.flush()).is_err() {
                    return;
                }
            }
        });
        let (lines, node) = (self.lines.clone(), name.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if lines.blocking_send((node.clone(), line)).is_err() {
                    return;
                }
            }
        });
        let mut w = self.lock();
        let p = &mut w.procs[i];
        p.child = Some(child);
        p.stdin = Some(in_tx);
        p.state = State::Up;
        Ok(())
    }

    fn signal(&self, i: usize, sig: Signal) {
        let w = self.lock();
        if let Some(c) = &w.procs[i].child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.lock().procs.iter().position(|p| p.name == name)
    }

    /// Sends a request to node `node` and waits up to `timeout` for its answer.
    async fn request(&self, node: &str, mut req: Value, timeout: Duration) -> Option<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        req["id"] = json!(id);
        let (tx, rx) = oneshot::channel();
        {
            let mut w = self.lock();
            let p = w.procs.iter().find(|p| p.name == node)?;
            if p.state != State::Up {
                return None;
            }
            let stdin = p.stdin.clone()?;
            w.pending.insert(id, tx);
            if stdin.try_send(req.to_string()).is_err() {
                w.pending.remove(&id);
                return None;
            }
        }
        let answer = tokio::time::timeout(timeout, rx).await.ok().and_then(Result::ok);
        if answer.is_none() {
            self.lock().pending.remove(&id);
        }
        answer
    }

    fn up_nodes(&self) -> Vec<String> {
        self.lock().procs.iter().filter(|p| p.state == State::Up).map(|p| p.name.clone()).collect()
    }

    fn success(&self) {
        let now = Instant::now();
        let mut w = self.lock();
        w.good_windows.insert(ms(now.saturating_duration_since(self.start)) / 250);
        w.last_success = Some(now);
    }

    /// Handles one line a node printed.
    fn on_line(&self, node: &str, line: &str) {
        let Ok(v) = serde_json::from_str::<Value>(line) else { return };
        let now = Instant::now();
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let mut w = self.lock();
        match v.get("ev").and_then(Value::as_str).unwrap_or_default() {
            "reply" => {
                if let Some(tx) = v.get("id").and_then(Value::as_u64).and_then(|id| w.pending.remove(&id)) {
                    let _ = tx.send(v.get("result").cloned().unwrap_or(Value::Null));
                }
            }
            "crash" => {
                w.crashes += 1;
                let (actor, kind, reason) = (s("actor"), s("kind"), s("reason"));
                let at = self.at(now);
                for f in w.faults.iter_mut().filter(|f| f.rec.detected_at_ms.is_none()) {
                    let hits = match f.kind {
                        Kind::Panic => reason.contains("injected fault"),
                        Kind::Hang => kind == "hung",
                        _ => false,
                    };
                    let target_matches = match f.rec.target.strip_prefix("worker@") {
                        Some(n) => n == node,
                        None => f.rec.target == actor,
                    };
                    if hits && target_matches {
                        f.rec.detected_at_ms = Some(at);
                        f.crashed = Some((node.to_string(), actor.clone()));
                        break;
                    }
                }
            }
            "restarted" => {
                let actor = s("actor");
                let at = self.at(now);
                for f in w.faults.iter_mut().filter(|f| f.rec.recovered_at_ms.is_none()) {
                    if f.crashed.as_ref().is_some_and(|(n, a)| n == node && *a == actor) {
                        f.rec.recovered_at_ms = Some(at);
                        break;
                    }
                }
            }
            "singleton" => {
                let name = s("name");
                match s("kind").as_str() {
                    "started" => {
                        let hosts = w.hosts.entry(name.clone()).or_default();
                        if !hosts.iter().any(|h| h == node) {
                            hosts.push(node.to_string());
                        }
                        for f in w.faults.iter_mut().filter(|f| f.rec.recovered_at_ms.is_none()) {
                            if let Some(pos) = f.displaced.iter().position(|d| *d == name) {
                                f.displaced.remove(pos);
                                f.rec.moved.push(format!("{name} -> {node}"));
                                if f.displaced.is_empty() {
                                    f.rehomed = Some(now);
                                }
                            }
                        }
                    }
                    "stopped" => {
                        if let Some(hosts) = w.hosts.get_mut(&name) {
                            hosts.retain(|h| h != node);
                            if hosts.is_empty() {
                                w.hosts.remove(&name);
                            }
                        }
                    }
                    _ => {}
                }
            }
            "node" => {
                let (kind, peer) = (s("kind"), s("peer"));
                let at = self.at(now);
                match kind.as_str() {
                    "down" | "suspected" => {
                        let mut explained = false;
                        for f in w.faults.iter_mut().filter(|f| matches!(f.kind, Kind::Kill | Kind::Stop)) {
                            if f.rec.target == peer && f.injected.elapsed() < Duration::from_secs(30) {
                                explained = true;
                                if kind == "down" && f.rec.detected_at_ms.is_none() {
                                    f.rec.detected_at_ms = Some(at);
                                }
                            }
                        }
                        // A node back from a freeze or a restart sees its peers' silence, and
                        // peers see the old session of a restarted node end.
                        let recent = |n: &str, w: &World| {
                            w.procs.iter().any(|p| {
                                p.name == n
                                    && (p.state != State::Up
                                        || p.back_at.is_some_and(|t| t.elapsed() < Duration::from_secs(10)))
                            })
                        };
                        if !explained && !recent(&peer, &w) && !recent(node, &w) {
                            w.false_suspicions += 1;
                            let line = format!("false suspicion: {node} reported {peer} {kind}");
                            w.log.push(line);
                        }
                    }
                    "up" => {
                        let resumed = w.procs.iter().any(|p| p.name == peer && p.state == State::Up);
                        for f in w.faults.iter_mut().filter(|f| f.kind == Kind::Stop && f.rec.target == peer) {
                            if resumed && f.rec.detected_at_ms.is_some() && f.rec.rejoined_at_ms.is_none() {
                                f.rec.rejoined_at_ms = Some(at);
                            }
                        }
                        for f in w.faults.iter_mut().filter(|f| f.kind == Kind::Restart && f.rec.target == peer) {
                            if f.rec.detected_at_ms.is_none() {
                                f.rec.detected_at_ms = Some(at);
                            }
                            if !f.seen_by.iter().any(|n| n == node) {
                                f.seen_by.push(node.to_string());
                                f.seen_last = Some(now);
                            }
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Asks where the key singleton answers from and its counter (every 50 ms during the run).
    async fn probe(&self, key: &str) {
        let Some(node) = self.up_nodes().first().cloned() else { return };
        let Some(v) = self.request(&node, json!({"op": "probe"}), Duration::from_secs(1)).await else { return };
        let (Some(host), Some(count)) = (v["node"].as_str(), v["count"].as_u64()) else { return };
        let now = Instant::now();
        let at = self.at(now);
        let mut w = self.lock();
        let p = &mut w.probe;
        p.samples += 1;
        if count < p.max_count {
            p.regressions += 1;
            let line = format!("{key} answered from {host} with counter {count}, below {} seen before", p.max_count);
            w.log.push(line);
        } else {
            p.max_count = count;
        }
        let p = &mut w.probe;
        if !p.hosts_seen.iter().any(|h| h == host) {
            p.hosts_seen.push(host.to_string());
        }
        for f in w.faults.iter_mut().filter(|f| matches!(f.kind, Kind::Kill | Kind::Stop)) {
            if f.rec.singleton_back_ms.is_none() && f.rec.target != host && f.key_displaced && count > 0 {
                f.rec.singleton_back_ms = Some(at.saturating_sub(f.rec.injected_at_ms));
            }
        }
    }

    /// Marks faults recovered whose conditions now hold (called every 50 ms).
    fn settle(&self) {
        let now = Instant::now();
        let at = self.at(now);
        let mut w = self.lock();
        let last_success = w.last_success;
        let up: Vec<String> = w.procs.iter().filter(|p| p.state == State::Up).map(|p| p.name.clone()).collect();
        for f in w.faults.iter_mut().filter(|f| f.rec.recovered_at_ms.is_none() && f.rec.detected_at_ms.is_some()) {
            match f.kind {
                Kind::Kill | Kind::Stop => {
                    let detected = self.start + Duration::from_millis(f.rec.detected_at_ms.unwrap_or(0));
                    let rehomed = f.displaced.is_empty();
                    let served = last_success.is_some_and(|t| t > detected);
                    if rehomed && served {
                        let when = f.rehomed.unwrap_or(detected).max(last_success.unwrap_or(detected));
                        f.rec.recovered_at_ms = Some(self.at(when).min(at));
                    }
                }
                // A restarted node is back when every other running node has it up.
                Kind::Restart if up.iter().all(|n| *n == f.rec.target || f.seen_by.contains(n)) => {
                    f.rec.recovered_at_ms = f.seen_last.map(|t| self.at(t));
                }
                _ => {}
            }
        }
    }

    /// Resolves `@singleton` / `@killed` targets.
    fn resolve(&self, target: &str) -> Option<String> {
        let w = self.lock();
        match target.strip_prefix('@') {
            Some("killed") => w
                .faults
                .iter()
                .rev()
                .find(|f| f.kind == Kind::Kill)
                .map(|f| f.rec.target.clone())
                .filter(|n| w.procs.iter().any(|p| p.name == *n && p.state == State::Killed)),
            Some(singleton) => w.hosts.get(singleton).and_then(|h| h.first()).cloned(),
            None => Some(target.to_string()),
        }
    }

    /// Injects one fault (or records why it could not be).
    async fn inject(self: &Arc<Self>, fault: &Fault) {
        let now = Instant::now();
        let mut rec = FaultRecord {
            kind: fault.kind.to_string(),
            target: fault.target.clone(),
            injected_at_ms: self.at(now),
            ..FaultRecord::default()
        };
        let open = |rec: FaultRecord, displaced: Vec<String>| {
            let key_displaced = displaced.iter().any(|d| *d == self.demo.key_singleton());
            self.lock().faults.push(Open {
                rec,
                kind: fault.kind,
                injected: now,
                crashed: None,
                displaced,
                rehomed: None,
                key_displaced,
                seen_by: Vec::new(),
                seen_last: None,
            });
        };
        let Some(target) = self.resolve(&fault.target) else {
            self.note(format!("skipped {} {}: no such node right now", fault.kind, fault.target));
            return;
        };
        rec.target = target.clone();
        match fault.kind {
            Kind::Panic | Kind::Hang => {
                let (node, op_target) = match target.strip_prefix("worker@") {
                    Some(n) => {
                        let up = self.up_nodes();
                        let node = if up.iter().any(|u| u == n) {
                            n.to_string()
                        } else {
                            up.first().cloned().unwrap_or_default()
                        };
                        if node != n {
                            rec.note = format!("{n} was down; hit a worker on {node}");
                            rec.target = format!("worker@{node}");
                        }
                        (node, "worker".to_string())
                    }
                    None => (String::new(), target.clone()),
                };
                open(rec, Vec::new());
                // A singleton may be moving: ask every running node in turn (any of them can
                // reach it wherever it runs), for up to 3 s; a fault that never reached its
                // target was not injected and is dropped from the record.
                let op = if fault.kind == Kind::Panic { "panic" } else { "hang" };
                let give_up = Instant::now() + Duration::from_secs(3);
                let mut last_answer = None;
                let sent_at = 'sending: loop {
                    let nodes = if node.is_empty() { self.up_nodes() } else { vec![node.clone()] };
                    for n in nodes {
                        let sent = Instant::now();
                        let answer =
                            self.request(&n, json!({"op": op, "target": op_target}), Duration::from_secs(2)).await;
                        if answer.as_ref().and_then(Value::as_str).is_some_and(|a| a == "sent" || a == "armed") {
                            break 'sending Some(sent);
                        }
                        last_answer = answer;
                    }
                    if Instant::now() >= give_up {
                        break None;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                };
                let mut w = self.lock();
                let Some(pos) = w.faults.iter().position(|f| f.injected == now) else { return };
                match sent_at {
                    Some(t) => {
                        w.faults[pos].injected = t;
                        w.faults[pos].rec.injected_at_ms = self.at(t);
                    }
                    None => {
                        w.faults.remove(pos);
                        w.log.push(format!("{op} {target} not injected: it could not be reached ({last_answer:?})"));
                    }
                }
            }
            Kind::Kill | Kind::Stop => {
                let Some(i) = self.index_of(&target) else { return };
                if self.lock().procs[i].state != State::Up {
                    self.note(format!("skipped {} {target}: not running", fault.kind));
                    return;
                }
                let displaced: Vec<String> = {
                    let w = self.lock();
                    w.hosts.iter().filter(|(_, h)| h.contains(&target)).map(|(s, _)| s.clone()).collect()
                };
                open(rec, displaced);
                if fault.kind == Kind::Kill {
                    self.signal(i, Signal::SIGKILL);
                    let mut w = self.lock();
                    w.procs[i].state = State::Killed;
                    if let Some(mut c) = w.procs[i].child.take() {
                        let _ = c.wait();
                    }
                    w.procs[i].stdin = None;
                } else {
                    self.signal(i, Signal::SIGSTOP);
                    self.lock().procs[i].state = State::Stopped;
                    let me = self.clone();
                    let hold = fault.hold;
                    tokio::spawn(async move {
                        tokio::time::sleep(hold).await;
                        me.resume(i);
                    });
                }
                // The singletons it hosted are gone with it (a stopped node stops its own
                // once it notices it is in the minority).
                let mut w = self.lock();
                w.hosts.retain(|_, h| {
                    h.retain(|n| *n != target);
                    !h.is_empty()
                });
            }
            Kind::Restart => {
                let Some(i) = self.index_of(&target) else { return };
                open(rec, Vec::new());
                match self.spawn_node(i) {
                    Ok(()) => self.lock().procs[i].back_at = Some(Instant::now()),
                    Err(e) => self.note(format!("restart of {target} failed: {e:#}")),
                }
            }
        }
    }

    fn resume(&self, i: usize) {
        let stopped = self.lock().procs[i].state == State::Stopped;
        if stopped {
            self.signal(i, Signal::SIGCONT);
            let mut w = self.lock();
            w.procs[i].state = State::Up;
            w.procs[i].back_at = Some(Instant::now());
        }
    }

    /// Stops every node: closes their stdin, SIGCONT + SIGTERM, then SIGKILL after 5 s.
    fn stop_all(&self) {
        let mut children = Vec::new();
        {
            let mut w = self.lock();
            for p in w.procs.iter_mut() {
                p.stdin = None;
                if let Some(c) = p.child.take() {
                    children.push(c);
                }
                p.state = State::Killed;
            }
        }
        for c in &children {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, Signal::SIGCONT);
            let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for mut c in children {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    // Hold all listeners until every port is known, so the n ports differ.
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// The live progress line.
fn progress(l: &Launcher, acked: u64, failed: u64, tty: bool) {
    let w = l.lock();
    let up = w.procs.iter().filter(|p| p.state == State::Up).count();
    let injected = w.faults.len();
    let detected = w.faults.iter().filter(|f| f.rec.detected_at_ms.is_some()).count();
    let recovered = w.faults.iter().filter(|f| f.rec.recovered_at_ms.is_some()).count();
    let last = w
        .faults
        .last()
        .map(|f| {
            let d =
                f.rec.detected_at_ms.map(|d| format!("detected +{}ms", d - f.rec.injected_at_ms)).unwrap_or("…".into());
            format!(" | last: {} {} {d}", f.rec.kind, f.rec.target)
        })
        .unwrap_or_default();
    let line = format!(
        "[{:>4.1}s] nodes up {up}/{} | ops {acked} acknowledged, {failed} failed | faults {injected} injected, {detected} detected, {recovered} recovered | crashes {}{last}",
        l.start.elapsed().as_secs_f64(),
        w.procs.len(),
        w.crashes
    );
    if tty {
        eprint!("\r\x1b[2K{line}");
    } else {
        eprintln!("{line}");
    }
}

/// Runs a demo; returns its report.
pub async fn run(settings: RunSettings, plan: Vec<Fault>, interrupted: Arc<AtomicBool>) -> anyhow::Result<Report> {
    let (data_dir, temporary) = match &settings.data_dir {
        Some(d) => (d.clone(), false),
        None => {
            (std::env::temp_dir().join(format!("warden-demo-{}-{}", settings.demo.name(), std::process::id())), true)
        }
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let ports = free_ports(settings.nodes).context("choosing ports on 127.0.0.1")?;
    let (spawner, jobs) = std::sync::mpsc::channel::<(Command, std::sync::mpsc::Sender<std::io::Result<Child>>)>();
    std::thread::Builder::new().name("warden-demo-spawner".into()).spawn(move || {
        for (mut cmd, answer) in jobs {
            let _ = answer.send(cmd.spawn());
        }
    })?;
    let (lines_tx, mut lines_rx) = mpsc::channel(QUEUE);
    let cookie = format!("warden-demo-{:x}", settings.seed ^ std::process::id() as u64);
    let launcher = Arc::new(Launcher {
        demo: settings.demo,
        world: Mutex::new(World {
            procs: (0..settings.nodes)
                .map(|i| Proc {
                    name: format!("n{}", i + 1),
                    port: ports[i],
                    state: State::Killed,
                    child: None,
                    stdin: None,
                    back_at: None,
                })
                .collect(),
            hosts: BTreeMap::new(),
            faults: Vec::new(),
            pending: HashMap::new(),
            false_suspicions: 0,
            crashes: 0,
            good_windows: HashSet::new(),
            last_success: None,
            log: Vec::new(),
            probe: Probe::default(),
        }),
        start: Instant::now(),
        next_id: AtomicU64::new(1),
        settings: settings.clone(),
        spawner,
        lines: lines_tx,
        data_dir: data_dir.clone(),
        cookie,
        acked: Arc::new(AtomicU64::new(0)),
        failed: Arc::new(AtomicU64::new(0)),
        ready: AtomicBool::new(false),
    });
    let l = launcher.clone();
    let reader = tokio::spawn(async move {
        while let Some((node, line)) = lines_rx.recv().await {
            l.on_line(&node, &line);
        }
    });
    let l = launcher.clone();
    let settler = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            l.settle();
        }
    });

    let observer = match settings.observe {
        Some(addr) => Some(observe::start(launcher.clone(), addr).await?),
        None => None,
    };
    let outcome = drive(&launcher, &settings, plan, &interrupted).await;
    if let Some(o) = observer {
        o.stop().await;
    }
    launcher.stop_all();
    settler.abort();
    reader.abort();
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    outcome
}

async fn drive(
    l: &Arc<Launcher>,
    settings: &RunSettings,
    plan: Vec<Fault>,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<Report> {
    for i in 0..settings.nodes {
        l.spawn_node(i)?;
    }
    // Ready when every singleton runs somewhere and every node sees all the others.
    let expected: Vec<String> = settings.demo.singletons(settings.accounts);
    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        let placed = { expected.iter().all(|s| l.lock().hosts.get(s).is_some_and(|h| h.len() == 1)) };
        if placed {
            break;
        }
        anyhow::ensure!(Instant::now() < ready_by, "the cluster did not place its singletons within 60 s");
        anyhow::ensure!(!interrupted.load(Ordering::Relaxed), "interrupted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    l.note(format!("cluster ready after {} ms", l.start.elapsed().as_millis()));
    l.ready.store(true, Ordering::Relaxed);
    let workload_start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, failed) = (l.acked.clone(), l.failed.clone());
    let state = Arc::new(Mutex::new(WorkState::default()));
    let mut workers = Vec::new();
    for w in 0..settings.concurrency {
        let (l, stop, acked, failed, state) = (l.clone(), stop.clone(), acked.clone(), failed.clone(), state.clone());
        let seed = settings.seed.wrapping_mul(31).wrapping_add(w as u64);
        workers.push(tokio::spawn(async move { work(l, seed, stop, acked, failed, state).await }));
    }
    let prober = {
        let (l, stop) = (l.clone(), stop.clone());
        tokio::spawn(async move {
            let key = l.demo.key_singleton();
            while !stop.load(Ordering::Relaxed) {
                l.probe(key).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !settings.quiet;
    let mut plan = plan.into_iter().peekable();
    let duration = settings.duration;
    let mut last_progress = Instant::now();
    while workload_start.elapsed() < duration && !interrupted.load(Ordering::Relaxed) {
        while plan.peek().is_some_and(|f| f.at <= workload_start.elapsed()) {
            if let Some(f) = plan.next() {
                l.inject(&f).await;
            }
        }
        if !settings.quiet && last_progress.elapsed() >= Duration::from_secs(1) {
            progress(l, acked.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), tty);
            last_progress = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let _ = prober.await;
    let workload = workload_start.elapsed();
    if tty {
        eprintln!();
    }
    anyhow::ensure!(!interrupted.load(Ordering::Relaxed), "interrupted");

    // Quiesce: every node running again, every singleton placed, then check.
    let n = settings.nodes;
    for i in 0..n {
        let st = l.lock().procs[i].state;
        match st {
            State::Stopped => l.resume(i),
            State::Killed => {
                l.note(format!("restarting {} for the final check", l.lock().procs[i].name));
                l.spawn_node(i)?;
                l.lock().procs[i].back_at = Some(Instant::now());
            }
            State::Up => {}
        }
    }
    let settle_by = Instant::now() + Duration::from_secs(60);
    while !expected.iter().all(|s| l.lock().hosts.get(s).is_some_and(|h| h.len() == 1)) && Instant::now() < settle_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let faults whose recovery is judged by the next success see one.
    for _ in 0..40 {
        if l.lock().faults.iter().all(|f| f.rec.recovered_at_ms.is_some() || f.rec.detected_at_ms.is_none()) {
            break;
        }
        let node = l.up_nodes().first().cloned().unwrap_or_default();
        if l.request(&node, json!({"op": "status"}), Duration::from_secs(2)).await.is_some_and(|v| !v.is_string()) {
            l.success();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    l.settle();

    let mut report = Report {
        demo: settings.demo.name().to_string(),
        nodes: n,
        seed: settings.seed,
        duration_s: (workload.as_secs_f64() * 10.0).round() / 10.0,
        acknowledged_ops: acked.load(Ordering::Relaxed),
        failed_requests: failed.load(Ordering::Relaxed),
        ..Report::default()
    };
    let st = std::mem::take(&mut *state.lock().unwrap_or_else(PoisonError::into_inner));
    match settings.demo {
        Demo::Bank => check_bank(l, settings, &st, &mut report).await,
        Demo::Pipeline => check_pipeline(l, &st, &mut report).await,
    }
    // Each singleton on exactly one node.
    let mut hosted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for node in l.up_nodes() {
        if let Some(Value::Array(names)) = l.request(&node, json!({"op": "hosted"}), Duration::from_secs(5)).await {
            for s in names.iter().filter_map(Value::as_str) {
                hosted.entry(s.to_string()).or_default().push(node.clone());
            }
        }
    }
    let singletons_ok = expected.iter().all(|s| hosted.get(s).is_some_and(|h| h.len() == 1));
    if !singletons_ok {
        report.invariant_ok = false;
        report.invariant.push_str(" Every singleton runs on exactly one node.");
    }
    let w = l.lock();
    if w.probe.regressions > 0 {
        report.invariant_ok = false;
        report.invariant.push_str(" The key singleton keeps its state when it moves.");
    }
    report.details["key_singleton"] = json!({
        "name": settings.demo.key_singleton(),
        "probes_answered": w.probe.samples,
        "highest_counter": w.probe.max_count,
        "counter_went_back": w.probe.regressions,
        "answered_from": w.probe.hosts_seen,
    });
    let back: Vec<f64> = w.faults.iter().filter_map(|f| f.rec.singleton_back_ms.map(|v| v as f64)).collect();
    report.details["singleton_failover_ms"] = json!(Spread::of(&back));
    report.details["singletons_exactly_once"] = json!(singletons_ok);
    report.details["singleton_hosts"] = json!(hosted);
    report.details["crashes_reported"] = json!(w.crashes);
    report.details["log"] = json!(w.log);
    report.faults = w.faults.iter().map(|f| f.rec.clone()).collect();
    report.faults_injected = report.faults.len();
    report.faults_detected = report.faults.iter().filter(|f| f.detected_at_ms.is_some()).count();
    report.faults_recovered = report.faults.iter().filter(|f| f.recovered_at_ms.is_some()).count();
    let det: Vec<f64> =
        report.faults.iter().filter_map(|f| f.detected_at_ms.map(|d| (d - f.injected_at_ms) as f64)).collect();
    let rec: Vec<f64> = report
        .faults
        .iter()
        .filter_map(|f| f.recovered_at_ms.map(|r| (r.saturating_sub(f.injected_at_ms)) as f64))
        .collect();
    report.detection_latency_ms = Spread::of(&det);
    report.recovery_time_ms = Spread::of(&rec);
    report.mtbf_s = (report.faults_detected > 0).then(|| workload.as_secs_f64() / report.faults_detected as f64);
    report.mttr_ms = (!rec.is_empty()).then(|| rec.iter().sum::<f64>() / rec.len() as f64);
    let first = ms(workload_start.saturating_duration_since(l.start)) / 250;
    let last = first + ms(workload) / 250;
    let windows = (last - first).max(1);
    let good = w.good_windows.iter().filter(|x| **x >= first && **x < last).count() as u64;
    report.availability = ((good as f64 / windows as f64) * 10_000.0).round() / 10_000.0;
    report.false_suspicions = w.false_suspicions;
    Ok(report)
}

/// What the workload did, for the final check.
#[derive(Default)]
struct WorkState {
    /// Bank: acknowledged transfers.
    transfers: Vec<Transfer>,
    /// Pipeline: every job handed to the cluster, and its outcome (`None`: none known).
    jobs: BTreeMap<u64, Option<String>>,
}

async fn work(
    l: Arc<Launcher>,
    seed: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    state: Arc<Mutex<WorkState>>,
) {
    // The workload's own randomness (which accounts, which node) need not be reproducible
    // across versions; the fault plan is.
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let accounts = l.settings.accounts as u64;
    while !stop.load(Ordering::Relaxed) {
        let up = l.up_nodes();
        if up.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let node = up[(next() % up.len() as u64) as usize].clone();
        let id = l.next_id.fetch_add(1, Ordering::Relaxed);
        match l.demo {
            Demo::Bank => {
                let from = next() % accounts;
                let to = (from + 1 + next() % (accounts - 1).max(1)) % accounts;
                let t = Transfer {
                    id,
                    from: bank::account_name(from as usize),
                    to: bank::account_name(to as usize),
                    amount: 1 + (next() % 20) as i64,
                };
                let answer = l.request(&node, json!({"op": "transfer", "transfer": t}), Duration::from_secs(4)).await;
                match answer.as_ref().and_then(Value::as_str) {
                    Some("ok") => {
                        acked.fetch_add(1, Ordering::Relaxed);
                        l.success();
                        state.lock().unwrap_or_else(PoisonError::into_inner).transfers.push(t);
                    }
                    Some("insufficient") => l.success(),
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Demo::Pipeline => {
                state.lock().unwrap_or_else(PoisonError::into_inner).jobs.insert(id, None);
                // A job stays with the client until it has an outcome: on an error or a lost
                // node it goes to another node (it may then run twice; it is recorded once).
                let mut node = node;
                let give_up = Instant::now() + Duration::from_secs(60);
                loop {
                    let answer = l.request(&node, json!({"op": "job", "job": id}), Duration::from_secs(6)).await;
                    let text = answer.as_ref().and_then(Value::as_str).unwrap_or("error: no answer").to_string();
                    if text == "completed" || text.starts_with("failed") {
                        acked.fetch_add(1, Ordering::Relaxed);
                        l.success();
                        state.lock().unwrap_or_else(PoisonError::into_inner).jobs.insert(id, Some(text));
                        break;
                    }
                    failed.fetch_add(1, Ordering::Relaxed);
                    if Instant::now() > give_up {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let up = l.up_nodes();
                    if !up.is_empty() {
                        node = up[(next() % up.len() as u64) as usize].clone();
                    }
                }
            }
        }
    }
}

async fn check_bank(l: &Arc<Launcher>, settings: &RunSettings, st: &WorkState, report: &mut Report) {
    let expected_total = INITIAL_BALANCE * settings.accounts as i64;
    report.invariant = format!(
        "Total money is constant ({expected_total} over {} accounts, counted with credits in flight) and every acknowledged transfer is debited at its source and credited at its destination after all faults.",
        settings.accounts
    );
    // Wait until no credit is in flight, then count.
    let mut last: Option<Value> = None;
    for _ in 0..120 {
        let node = l.up_nodes().first().cloned().unwrap_or_default();
        if let Some(v) = l.request(&node, json!({"op": "books"}), Duration::from_secs(5)).await {
            let quiet = v["audit"]["outbox_entries"].as_u64() == Some(0);
            if v.get("books").is_some() {
                last = Some(v);
            }
            if quiet {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let Some(v) = last else {
        report.invariant_ok = false;
        report.details = json!({"error": "the accounts could not be read at the end"});
        return;
    };
    let books: Vec<Book> = serde_json::from_value(v["books"].clone()).unwrap_or_default();
    let by_name: HashMap<&str, &Book> = books.iter().map(|b| (b.name.as_str(), b)).collect();
    let mut missing = Vec::new();
    for t in &st.transfers {
        let debited = by_name.get(t.from.as_str()).is_some_and(|b| b.debited.contains(&t.id));
        let credited = by_name.get(t.to.as_str()).is_some_and(|b| b.credited.contains(&t.id));
        if !(debited && credited) {
            missing.push(json!({"transfer": t, "debited": debited, "credited": credited}));
        }
    }
    let lost = missing.len() as u64;
    let total: i64 = v["audit"]["total"].as_i64().unwrap_or(i64::MIN);
    let in_flight = v["audit"]["in_flight"].as_i64().unwrap_or(-1);
    report.lost_acknowledged_ops = lost;
    report.invariant_ok = books.len() == settings.accounts && total == expected_total && in_flight == 0 && lost == 0;
    let node = l.up_nodes().first().cloned().unwrap_or_default();
    let auditor = l.request(&node, json!({"op": "status"}), Duration::from_secs(5)).await;
    report.details = json!({
        "accounts": books.len(),
        "expected_total": expected_total,
        "counted_total": total,
        "credits_in_flight": in_flight,
        "transfers_acknowledged": st.transfers.len(),
        "auditor": auditor,
        "lost_transfers": missing.iter().take(20).collect::<Vec<_>>(),
    });
}

async fn check_pipeline(l: &Arc<Launcher>, st: &WorkState, report: &mut Report) {
    report.invariant = "Every accepted job is completed exactly once (recorded once in the replicated results singleton) or reported failed; none is lost.".into();
    let node = l.up_nodes().first().cloned().unwrap_or_default();
    let mut summary = None;
    for _ in 0..20 {
        if let Some(v) = l.request(&node, json!({"op": "status"}), Duration::from_secs(5)).await {
            if v.get("completed").is_some() {
                summary = Some(v);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let Some(v) = summary else {
        report.invariant_ok = false;
        report.details = json!({"error": "the results singleton could not be read at the end"});
        return;
    };
    let completed: HashSet<u64> =
        v["completed"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
    let (mut done, mut failed, mut lost, mut unknown) = (0u64, 0u64, 0u64, 0u64);
    for (id, outcome) in &st.jobs {
        match outcome.as_deref() {
            _ if completed.contains(id) => done += 1,
            Some(o) if o.starts_with("failed") => failed += 1,
            Some(_) => lost += 1, // answered "completed" but not recorded
            None => unknown += 1,
        }
    }
    let strangers = completed.iter().filter(|id| !st.jobs.contains_key(id)).count();
    report.lost_acknowledged_ops = lost + unknown;
    report.invariant_ok = lost == 0 && unknown == 0 && strangers == 0;
    report.details = json!({
        "jobs_accepted": st.jobs.len(),
        "jobs_completed": done,
        "jobs_failed": failed,
        "jobs_without_outcome": unknown,
        "duplicates_suppressed": v["duplicates"],
        "recorded_but_never_submitted": strangers,
    });
}

/// Writes the report as JSON.
pub fn write_report(path: &Path, report: &Report) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing the report to {}", path.display()))
}

/// The observer of a demo run (`--observe`): the launcher asks every running node for its
/// trees, crash reports, peers and checkpoints twice a second, adds what it knows (node
/// processes, faults, progress) and publishes the whole as one snapshot; the page's fault
/// buttons come back here as faults injected like planned ones.
mod observe {
    use super::*;
    use warden_observe::web::{FaultRequest, Observer, ObserverConfig};

    /// A snapshot of the whole cluster, as the page draws it.
    async fn snapshot(l: &Arc<Launcher>) -> Value {
        let procs: Vec<(String, State, u16)> =
            l.lock().procs.iter().map(|p| (p.name.clone(), p.state, p.port)).collect();
        let mut asks = tokio::task::JoinSet::new();
        for (i, (name, state, _)) in procs.iter().enumerate() {
            if *state == State::Up {
                let (l, name) = (l.clone(), name.clone());
                asks.spawn(async move {
                    (i, l.request(&name, json!({"op": "observe"}), Duration::from_millis(1500)).await)
                });
            }
        }
        let mut observed: Vec<Value> = vec![Value::Null; procs.len()];
        while let Some(Ok((i, v))) = asks.join_next().await {
            observed[i] = v.filter(Value::is_object).unwrap_or(Value::Null);
        }
        let nodes: Vec<Value> = procs
            .iter()
            .zip(observed)
            .map(|((name, state, port), obs)| {
                let state = match state {
                    State::Up => "up",
                    State::Killed => "killed",
                    State::Stopped => "stopped",
                };
                json!({"name": name, "state": state, "addr": format!("127.0.0.1:{port}"), "observed": obs})
            })
            .collect();
        let names: Vec<String> = procs.iter().map(|p| p.0.clone()).collect();
        let targets = l.demo.targets(&names, l.settings.accounts);
        let w = l.lock();
        json!({
            "demo": l.demo.name(),
            "demo_mode": true,
            "ready": l.ready.load(Ordering::Relaxed),
            "elapsed_ms": ms(l.start.elapsed()),
            "progress": {"acknowledged": l.acked.load(Ordering::Relaxed), "failed": l.failed.load(Ordering::Relaxed)},
            "nodes": nodes,
            "hosts": w.hosts,
            "faults": w.faults.iter().map(|f| f.rec.clone()).collect::<Vec<_>>(),
            "targets": {"actors": targets.actors, "nodes": targets.nodes},
        })
    }

    /// Turns a click into a fault: checked against the demo's targets, injected now; a killed
    /// node is started again 5 s later, a frozen one resumed after 3 s.
    async fn clicked(l: &Arc<Launcher>, req: &FaultRequest) -> Result<String, String> {
        let names: Vec<String> = l.lock().procs.iter().map(|p| p.name.clone()).collect();
        let targets = l.demo.targets(&names, l.settings.accounts);
        let kind = match req.kind.as_str() {
            "panic" => Kind::Panic,
            "hang" => Kind::Hang,
            "kill" => Kind::Kill,
            "stop" => Kind::Stop,
            other => return Err(format!("unknown fault {other:?}")),
        };
        let known = if kind.is_node_fault() { &targets.nodes } else { &targets.actors };
        if !known.contains(&req.target) {
            return Err(format!(
                "no {} {:?} in this demo",
                if kind.is_node_fault() { "node" } else { "actor" },
                req.target
            ));
        }
        if kind.is_node_fault() {
            let up = l.up_nodes();
            if !up.contains(&req.target) {
                return Err(format!("{} is not running", req.target));
            }
            if up.len() * 2 <= l.settings.nodes + 1 {
                return Err("another node is already down: losing this one too would lose the majority".into());
            }
        }
        let fault = Fault { at: Duration::ZERO, kind, target: req.target.clone(), hold: Duration::from_secs(3) };
        l.inject(&fault).await;
        if kind == Kind::Kill {
            let (l, target) = (l.clone(), req.target.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let restart = Fault { at: Duration::ZERO, kind: Kind::Restart, target, hold: Duration::ZERO };
                l.inject(&restart).await;
            });
        }
        Ok(format!("{} {}", req.kind, req.target))
    }

    /// Starts the observer; prints its address.
    pub async fn start(l: Arc<Launcher>, addr: std::net::SocketAddr) -> anyhow::Result<Observer> {
        let (snap_tx, snap_rx) =
            tokio::sync::watch::channel(json!({"demo": l.demo.name(), "demo_mode": true, "nodes": []}));
        let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
        let (fault_tx, mut fault_rx) = tokio::sync::mpsc::channel::<FaultRequest>(16);
        let metrics = warden_observe::install_prometheus().ok();
        let config = ObserverConfig { bind: Some(addr), metrics, faults: Some(fault_tx) };
        let observer = Observer::serve(config, snap_rx, ready_rx).await?;
        let (lp, lf) = (l.clone(), l.clone());
        tokio::spawn(async move {
            loop {
                let s = snapshot(&lp).await;
                {
                    let w = lp.lock();
                    let up = w.procs.iter().filter(|p| p.state == State::Up).count();
                    metrics::gauge!("warden_demo_nodes_up").set(up as f64);
                    metrics::gauge!("warden_demo_faults_injected").set(w.faults.len() as f64);
                    metrics::gauge!("warden_demo_faults_detected")
                        .set(w.faults.iter().filter(|f| f.rec.detected_at_ms.is_some()).count() as f64);
                    metrics::gauge!("warden_demo_faults_recovered")
                        .set(w.faults.iter().filter(|f| f.rec.recovered_at_ms.is_some()).count() as f64);
                }
                metrics::gauge!("warden_demo_ops_acknowledged").set(lp.acked.load(Ordering::Relaxed) as f64);
                metrics::gauge!("warden_demo_requests_failed").set(lp.failed.load(Ordering::Relaxed) as f64);
                let _ = ready_tx.send(lp.ready.load(Ordering::Relaxed));
                if snap_tx.send(s).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        tokio::spawn(async move {
            while let Some(req) = fault_rx.recv().await {
                let answer = clicked(&lf, &req).await;
                lf.note(format!("from the observer: {} {} -> {answer:?}", req.kind, req.target));
                let _ = req.reply.send(answer);
            }
        });
        eprintln!("observer: http://{}/", observer.addr());
        Ok(observer)
    }
}
