//! A demo node process (`warden demo-node`, started by `warden demo`): a warden node on
//! ractor_cluster with its replicated checkpoint store, singleton host and the demo's actors,
//! driven by its launcher through stdin and reporting on stdout, one JSON object per line.
//!
//! Requests (stdin): `{"id":N,"op":OP,...}` with OP `transfer` (bank), `job` (pipeline),
//! `panic` / `hang` (`target`: a singleton name, or `worker` for this node's pool), `status`,
//! `books` (bank: every account), `probe` (where the key singleton runs and its counter),
//! `hosted`. Each gets one `{"ev":"reply","id":N,"result":...}`.
//! Events (stdout): `ready`, `node` (peer up / suspected / recovered / down / refused),
//! `singleton` (started / stopped / start_failed), `crash` and `restarted` (supervision).
//!
//! The node ends when its stdin closes (its launcher is gone), on SIGTERM, and, on Linux, when
//! its launcher dies (parent-death signal, set before this program runs).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use warden_checkpoint::{CheckpointConfig, Checkpoints, RedbStore, Store};
use warden_cluster::singleton::{locate, SingletonConfig, SingletonEvent, Singletons};
use warden_cluster::{Node, NodeConfig, NodeEvent, Replication};
use warden_core::{Supervisor, SupervisorEvent, SupervisorSpec};

use super::bank::{self, AccountMsg, AuditorMsg, Transfer};
use super::pipeline::{self, Faults, ResultsMsg};
use super::Demo;

/// What a demo node is started with.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Which demo.
    pub demo: Demo,
    /// The node's name.
    pub name: String,
    /// The cluster cookie.
    pub cookie: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Nodes to connect to (and reconnect to when they are lost).
    pub connect: Vec<SocketAddr>,
    /// The cluster's size.
    pub cluster_size: usize,
    /// Where its store lives.
    pub data_dir: PathBuf,
    /// Accounts (bank).
    pub accounts: usize,
}

/// One request from the launcher.
#[derive(Deserialize, Debug)]
struct Request {
    id: u64,
    op: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    transfer: Option<Transfer>,
    #[serde(default)]
    job: u64,
}

/// Writes one JSON line on stdout (a whole line per call, so lines never interleave).
pub fn emit(value: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn actor_of(path: &warden_core::ActorPath) -> String {
    path.name().to_string()
}

/// Forwards a supervisor's crash and restart events.
fn forward(mut events: tokio::sync::broadcast::Receiver<SupervisorEvent>, node: String) {
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(SupervisorEvent::ChildExited { path, reason, .. }) if !reason.is_normal() => emit(
                    json!({"ev": "crash", "node": node, "actor": actor_of(&path), "kind": reason.kind(), "reason": reason.to_string()}),
                ),
                Ok(SupervisorEvent::ChildRestarted { path, .. }) => {
                    emit(json!({"ev": "restarted", "node": node, "actor": actor_of(&path)}))
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// Runs the node until its launcher goes away or it gets SIGTERM.
pub async fn run(s: NodeSettings) -> anyhow::Result<()> {
    let mut config = NodeConfig::new(s.name.clone(), s.cookie.clone());
    config.port = s.port;
    let node = Node::start(config).await.context("starting the node")?;
    let dir = s.data_dir.clone();
    let store: Arc<dyn Store> =
        Arc::new(tokio::task::spawn_blocking(move || RedbStore::open(dir)).await.context("opening the store")??);
    let replication = Arc::new(Replication::start(store, s.cluster_size).await?);
    let checkpoints = Checkpoints::start(replication.store(), CheckpointConfig::default()).await?;

    let mut node_events = node.subscribe();
    tokio::spawn(async move {
        loop {
            let event = match node_events.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            let v = match event {
                NodeEvent::Up { peer, .. } => json!({"kind": "up", "peer": peer}),
                NodeEvent::Suspected { peer, phi } => json!({"kind": "suspected", "peer": peer, "phi": phi}),
                NodeEvent::Recovered { peer } => json!({"kind": "recovered", "peer": peer}),
                NodeEvent::Down { peer, cause, .. } => json!({"kind": "down", "peer": peer, "cause": cause}),
                NodeEvent::Refused { addr, cause } => json!({"kind": "refused", "peer": addr, "cause": cause}),
            };
            let mut v = v;
            v["ev"] = json!("node");
            emit(v);
        }
    });

    // The pipeline's pool runs on every node, under the node's own supervisor.
    let faults = Arc::new(Faults::default());
    let (pool, app) = match s.demo {
        Demo::Pipeline => {
            let (pool_child, pool) = pipeline::pool(faults.clone()).build();
            let app =
                Supervisor::start(&format!("{}-app", s.name), SupervisorSpec::one_for_one().child(pool_child)).await?;
            forward(app.subscribe(), s.name.clone());
            (Some(pool), Some(app))
        }
        Demo::Bank => (None, None),
    };

    let specs = match s.demo {
        Demo::Bank => bank::singletons(&checkpoints, &s.name, s.accounts),
        Demo::Pipeline => pipeline::singletons(&checkpoints, &s.name),
    };
    let singletons = Arc::new(
        Singletons::start(node.view(), SingletonConfig::new(s.cluster_size), Some(replication.clone()), specs).await?,
    );
    let mut sing_events = singletons.subscribe();
    let (host, me) = (singletons.clone(), s.name.clone());
    tokio::spawn(async move {
        loop {
            let event = match sing_events.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            match event {
                SingletonEvent::Started { name, caught_up_to, .. } => {
                    if let Some(sup) = host.supervisor(&name).await {
                        forward(sup.subscribe(), me.clone());
                    }
                    emit(json!({"ev": "singleton", "kind": "started", "name": name, "seq": caught_up_to}))
                }
                SingletonEvent::Stopped { name, why, .. } => {
                    emit(json!({"ev": "singleton", "kind": "stopped", "name": name, "why": why}))
                }
                SingletonEvent::StartFailed { name, error } => {
                    emit(json!({"ev": "singleton", "kind": "start_failed", "name": name, "why": error}))
                }
            }
        }
    });

    for addr in &s.connect {
        // A peer not listening yet is retried by the node (seeds reconnect about once a second).
        if let Err(e) = node.connect(*addr).await {
            tracing::debug!(error = %e, "first connection attempt failed");
        }
    }
    emit(json!({"ev": "ready", "node": s.name, "addr": node.addr().to_string(), "pid": std::process::id()}));

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { break }; // the launcher is gone
                let req: Request = match serde_json::from_str(&line) {
                    Ok(r) => r,
                    Err(e) => {
                        emit(json!({"ev": "error", "what": format!("bad request {line:?}: {e}")}));
                        continue;
                    }
                };
                let ctx = Ctx {
                    demo: s.demo,
                    accounts: s.accounts,
                    faults: faults.clone(),
                    pool: pool.clone(),
                    host: singletons.clone(),
                    app: app.clone(),
                    view: node.view(),
                    checkpoints: checkpoints.clone(),
                };
                tokio::spawn(async move {
                    let id = req.id;
                    let result = ctx.serve(req).await;
                    emit(json!({"ev": "reply", "id": id, "result": result}));
                });
            }
            _ = term.recv() => break,
        }
    }
    singletons.shutdown().await;
    if let Some(app) = app {
        app.shutdown().await;
    }
    let _ = checkpoints.close().await;
    replication.stop();
    node.stop();
    Ok(())
}

struct Ctx {
    demo: Demo,
    accounts: usize,
    faults: Arc<Faults>,
    pool: Option<warden_pool::Pool<u64, u64>>,
    host: Arc<Singletons>,
    app: Option<warden_core::SupervisorRef>,
    view: warden_cluster::NodeView,
    checkpoints: Checkpoints,
}

fn answer<T: Into<Value>>(r: Result<ractor::rpc::CallResult<T>, impl std::fmt::Display>) -> Value {
    match r {
        Ok(ractor::rpc::CallResult::Success(v)) => v.into(),
        Ok(ractor::rpc::CallResult::Timeout) => json!("error: no answer in time"),
        Ok(ractor::rpc::CallResult::SenderError) => json!("error: the actor went away"),
        Err(e) => json!(format!("error: {e}")),
    }
}

impl Ctx {
    /// This node as the observer shows it: peers with phi, every supervisor with its children
    /// and their reliability figures, the latest crash reports, the hosted singletons'
    /// checkpoints.
    async fn observe(&self) -> Value {
        use warden_cluster::singleton::SUPERVISOR_INTENSITY;
        let peers: Vec<Value> = self
            .view
            .peers()
            .into_iter()
            .map(|p| json!({"name": p.name, "state": p.state, "phi": if p.phi.is_finite() { json!(p.phi) } else { Value::Null }, "silent_ms": p.silent_ms}))
            .collect();
        let singleton_intensity =
            format!("{} restarts in {} s", SUPERVISOR_INTENSITY.0, SUPERVISOR_INTENSITY.1.as_secs());
        let mut queue: Vec<(String, warden_core::SupervisorRef, String)> = Vec::new();
        let mut keys = Vec::new();
        for (name, sup) in self.host.supervisors().await {
            keys.extend(self.host.checkpoint_keys(&name));
            queue.push((format!("singleton {name}"), sup, singleton_intensity.clone()));
        }
        if let Some(app) = &self.app {
            queue.push(("node supervisor".into(), app.clone(), "default intensity".into()));
        }
        let (mut supervisors, mut reports) = (Vec::new(), Vec::new());
        while let Some((name, sup, intensity)) = queue.pop() {
            let recent: Vec<warden_core::CrashReport> = {
                let all = sup.crash_reports();
                let from = all.len().saturating_sub(5);
                all[from..].to_vec()
            };
            let mut children = Vec::new();
            for c in sup.which_children().await.unwrap_or_default() {
                let path = c.path.to_string();
                if let Some(child_sup) = &c.supervisor {
                    queue.push((format!("{name} / {}", c.id), child_sup.clone(), "its own intensity".into()));
                }
                let last_failure = recent.iter().rev().find(|r| r.path == path).map(|r| r.reason_kind);
                children.push(json!({
                    "id": c.id,
                    "path": path,
                    "status": format!("{:?}", c.status).to_lowercase(),
                    "type": format!("{:?}", c.child_type).to_lowercase(),
                    "restarts": c.restarts,
                    "incarnation": c.incarnation,
                    "mailbox": Value::Null, // ractor does not expose a mailbox's length
                    "stats": sup.stats(&path),
                    "last_failure": last_failure,
                }));
            }
            supervisors.push(json!({
                "name": name,
                "path": sup.path().to_string(),
                "strategy": "one_for_one",
                "intensity": intensity,
                "stats": sup.subtree_stats(&sup.path().to_string()),
                "children": children,
            }));
            reports.extend(recent);
        }
        supervisors.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let mut checkpoints = Vec::new();
        let store = self.checkpoints.store().ok();
        for key in keys {
            let newest = self.checkpoints.list(&key).await.ok().and_then(|l| l.last().cloned());
            let last_seq = match store.clone() {
                Some(st) => {
                    let k = key.clone();
                    tokio::task::spawn_blocking(move || st.last_seq(&k).ok()).await.ok().flatten()
                }
                None => None,
            };
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            checkpoints.push(json!({
                "key": key,
                "last_seq": last_seq,
                "snapshot_seq": newest.as_ref().map(|i| i.seq),
                "size_bytes": newest.as_ref().map(|i| i.size),
                "age_ms": newest.as_ref().map(|i| now_ms.saturating_sub(i.created_unix_ms)),
            }));
        }
        json!({
            "node": self.view.name(),
            "peers": peers,
            "supervisors": supervisors,
            "crash_reports": reports,
            "checkpoints": checkpoints,
        })
    }

    async fn serve(&self, req: Request) -> Value {
        let t = Some(Duration::from_millis(2500));
        match (self.demo, req.op.as_str()) {
            (Demo::Bank, "transfer") => {
                let Some(tr) = req.transfer else {
                    return json!(format!("error: request {}: op \"transfer\" needs a \"transfer\" object", req.id));
                };
                let Some(acct) = locate::<AccountMsg>(&tr.from) else {
                    return json!(format!(
                        "error: {} is not running on any node reachable from here (moving?)",
                        tr.from
                    ));
                };
                let j = serde_json::to_string(&tr).unwrap_or_default();
                answer(acct.call(|p| AccountMsg::Debit(j, p), t).await)
            }
            (Demo::Pipeline, "job") => match &self.pool {
                Some(pool) => json!(pipeline::run_job(pool, req.job).await),
                None => json!("error: this node runs no pool (not a pipeline node)"),
            },
            (Demo::Pipeline, "panic") | (Demo::Pipeline, "hang") if req.target == "worker" => {
                let counter = if req.op == "panic" { &self.faults.panics } else { &self.faults.hangs };
                counter.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                json!("armed")
            }
            (_, "panic") | (_, "hang") => {
                let panic = req.op == "panic";
                let sent = match self.demo {
                    Demo::Bank if req.target == "auditor" => locate::<AuditorMsg>("auditor")
                        .map(|a| a.cast(if panic { AuditorMsg::Panic } else { AuditorMsg::Hang }).is_ok()),
                    Demo::Bank => locate::<AccountMsg>(&req.target)
                        .map(|a| a.cast(if panic { AccountMsg::Panic } else { AccountMsg::Hang }).is_ok()),
                    Demo::Pipeline => locate::<ResultsMsg>(&req.target)
                        .map(|a| a.cast(if panic { ResultsMsg::Panic } else { ResultsMsg::Hang }).is_ok()),
                };
                match sent {
                    Some(true) => json!("sent"),
                    _ => json!(format!("error: {} not reachable", req.target)),
                }
            }
            (Demo::Bank, "status") => match locate::<AuditorMsg>("auditor") {
                Some(a) => {
                    let r = answer(a.call(AuditorMsg::Status, t).await);
                    r.as_str().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(r)
                }
                None => json!("error: the auditor is not running on any node reachable from here (moving?)"),
            },
            (Demo::Pipeline, "status") => match locate::<ResultsMsg>("results") {
                Some(a) => {
                    let r = answer(a.call(ResultsMsg::Summary, t).await);
                    r.as_str().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(r)
                }
                None => json!("error: the results recorder is not running on any node reachable from here (moving?)"),
            },
            (Demo::Bank, "probe") => match locate::<AuditorMsg>("auditor") {
                Some(a) => {
                    let r = answer(a.call(AuditorMsg::Status, Some(Duration::from_secs(1))).await);
                    match r.as_str().and_then(|s| serde_json::from_str::<Value>(s).ok()) {
                        Some(v) => json!({"node": v["node"], "count": v["audits"]}),
                        None => r,
                    }
                }
                None => json!("error: the auditor is not running on any node reachable from here (moving?)"),
            },
            (Demo::Pipeline, "probe") => match locate::<ResultsMsg>("results") {
                Some(a) => {
                    let r = answer(a.call(ResultsMsg::Count, Some(Duration::from_secs(1))).await);
                    r.as_str().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(r)
                }
                None => json!("error: the results recorder is not running on any node reachable from here (moving?)"),
            },
            (Demo::Bank, "books") => match bank::audit(self.accounts).await {
                Some((audit, books)) => json!({"audit": audit, "books": books}),
                None => json!("error: an account did not answer"),
            },
            (_, "hosted") => json!(self.host.hosted().await),
            (_, "observe") => self.observe().await,
            (_, op) => json!(format!("error: unknown op {op:?} for this demo")),
        }
    }
}
