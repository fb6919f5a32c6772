//! `warden bench-cluster`: node failure detection measured against real node processes.
//!
//! A watcher node runs in this process; each repetition starts one peer (this binary, `warden
//! node`) that connects to it, waits until the watcher sees it up plus half a second of
//! heartbeats, then SIGKILLs or SIGSTOPs it and times the watcher's `Down` event. Then three
//! idle nodes (the watcher and two peers) run for a while and every `Suspected` or `Down` the
//! watcher reports is a false suspicion. Prints one JSON object; percentiles come from an HDR
//! histogram (within 0.1%) over the repetitions (with 20, p99 is the largest). Last, a 3-node bank demo in which the
//! node hosting the auditor singleton and the Raft leader are killed in turn gives
//! `singleton_failover_p50_ms` / `_p99_ms` (kill until the auditor answers from another node
//! with its state) and `failover_leader_killed_*` / `failover_follower_killed_*` (kill until
//! every singleton of the killed node answers elsewhere, by whether it led). First of all,
//! [`commits`] measures acknowledged durable writes across a 3-node group.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::Signal;
use tokio::sync::broadcast::Receiver;
use warden_cluster::{NodeEvent, Transport, TransportConfig};

use crate::demo::report::Spread;

pub mod commits;

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        signal(&self.0, Signal::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
}

fn spawn_peer(name: &str, target: std::net::SocketAddr) -> anyhow::Result<Peer> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let child = Command::new(exe)
        .args(["node", "--name", name, "--cookie", "bench", "--found", "--connect", &target.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting a peer node")?;
    Ok(Peer(child))
}

async fn until(rx: &mut Receiver<NodeEvent>, within: Duration, pred: impl Fn(&NodeEvent) -> bool) -> Option<NodeEvent> {
    let end = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Ok(e)) if pred(&e) => return Some(e),
            Ok(Ok(_)) => continue,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            _ => return None,
        }
    }
}

async fn time_down(
    watcher: &Transport,
    events: &mut Receiver<NodeEvent>,
    name: &str,
    freeze: bool,
) -> anyhow::Result<f64> {
    let peer = spawn_peer(name, watcher.addr())?;
    until(events, Duration::from_secs(20), |e| matches!(e, NodeEvent::Up { peer, .. } if peer == name))
        .await
        .with_context(|| format!("{name} did not come up"))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    if freeze {
        signal(&peer.0, Signal::SIGSTOP);
    } else {
        let mut peer = peer;
        let _ = peer.0.kill();
        let _ = peer.0.wait();
        until(events, Duration::from_secs(20), |e| matches!(e, NodeEvent::Down { peer, .. } if peer == name))
            .await
            .with_context(|| format!("{name} was never declared down"))?;
        return Ok(t.elapsed().as_secs_f64() * 1000.0);
    }
    until(events, Duration::from_secs(20), |e| matches!(e, NodeEvent::Down { peer, .. } if peer == name))
        .await
        .with_context(|| format!("{name} was never declared down"))?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    drop(peer);
    Ok(ms)
}

/// What the failover runs measured.
struct Failovers {
    /// Kill until the auditor answered from another node with its state.
    auditor_back: Vec<f64>,
    /// Kill until every singleton of the killed node ran elsewhere and a request succeeded,
    /// when the killed node was the Raft leader.
    leader_killed: Vec<f64>,
    /// The same when it was not.
    follower_killed: Vec<f64>,
    invariant_ok: bool,
}

/// Singleton failover: a 3-node bank demo (real node processes) in which a node is killed `n`
/// times (each restarted 4 s later), alternately the node hosting the auditor and the Raft
/// leader; each time, from the kill until the auditor answers from another node with its audit
/// count at least where it was (when it was displaced), and until every displaced singleton
/// runs elsewhere and a request succeeded (split by whether the killed node led).
async fn singleton_failovers(n: usize) -> anyhow::Result<Failovers> {
    use crate::demo::plan::{Action, Fault, NodeRef};
    use crate::demo::{launcher, Demo, RunSettings};
    let mut faults = Vec::new();
    for i in 0..n as u64 {
        let at = Duration::from_secs(3 + 8 * i);
        let target = if i % 2 == 0 { NodeRef::Hosting("auditor".into()) } else { NodeRef::Leader };
        faults.push(Fault { at, action: Action::Kill(target) });
        faults.push(Fault { at: at + Duration::from_secs(4), action: Action::Restart(NodeRef::Killed) });
    }
    let settings = RunSettings {
        demo: Demo::Bank,
        nodes: 3,
        duration: Duration::from_secs(3 + 8 * n as u64 + 4),
        seed: 1,
        data_dir: None,
        accounts: 12,
        concurrency: 4,
        quiet: true,
        node_logs: false,
        observe: None,
    };
    let net = launcher::net::Net::choose(false);
    let report = launcher::run(settings, faults, net, Default::default()).await?;
    let auditor_back: Vec<f64> = report.faults.iter().filter_map(|f| f.singleton_back_ms.map(|v| v as f64)).collect();
    let expected = n.div_ceil(2);
    anyhow::ensure!(
        auditor_back.len() >= expected,
        "the auditor came back after {} of the {expected} kills of its node",
        auditor_back.len()
    );
    let (mut leader_killed, mut follower_killed) = (Vec::new(), Vec::new());
    for f in report.faults.iter().filter(|f| f.kind == "kill") {
        let recovered = f.recovered_at_ms.context("a kill the cluster did not recover from")?;
        let ms = recovered.saturating_sub(f.injected_at_ms) as f64;
        if f.was_leader == Some(true) {
            leader_killed.push(ms);
        } else {
            follower_killed.push(ms);
        }
    }
    Ok(Failovers { auditor_back, leader_killed, follower_killed, invariant_ok: report.invariant_ok })
}

/// What to measure: the counts and durations `warden bench-cluster` was given.
pub struct BenchSettings {
    /// Kills and freezes measured, each.
    pub reps: usize,
    /// How long three idle nodes are watched for false suspicions.
    pub quiet: Duration,
    /// Failovers measured in the bank demo (0: none).
    pub failovers: usize,
    /// Writers of the replicated-commit run.
    pub commit_writers: usize,
    /// How long the replicated-commit run writes (zero: no such run).
    pub commit_for: Duration,
}

pub async fn run(settings: BenchSettings) -> anyhow::Result<()> {
    let BenchSettings { reps, quiet, failovers, commit_writers, commit_for } = settings;
    // First, while this process is no node yet (one node per process).
    let commits = if commit_for.is_zero() { None } else { Some(commits::measure(commit_writers, commit_for).await?) };
    let watcher = Transport::start(TransportConfig::new("bench-watcher", "bench")).await?;
    let mut events = watcher.subscribe();
    let (mut killed, mut frozen) = (Vec::new(), Vec::new());
    for i in 0..reps {
        killed.push(time_down(&watcher, &mut events, &format!("killed-{i}"), false).await?);
        frozen.push(time_down(&watcher, &mut events, &format!("frozen-{i}"), true).await?);
    }
    // Quiet run: two idle peers, every suspicion is false.
    let peers = [spawn_peer("quiet-1", watcher.addr())?, spawn_peer("quiet-2", watcher.addr())?];
    // Both up, in whichever order their handshakes finish.
    let mut waiting = vec!["quiet-1", "quiet-2"];
    while !waiting.is_empty() {
        let up = until(
            &mut events,
            Duration::from_secs(20),
            |e| matches!(e, NodeEvent::Up { peer, .. } if waiting.contains(&peer.as_str())),
        )
        .await
        .with_context(|| format!("{waiting:?} did not come up"))?;
        if let NodeEvent::Up { peer, .. } = up {
            waiting.retain(|w| *w != peer);
        }
    }
    let mut false_suspicions = 0u64;
    let end = tokio::time::Instant::now() + quiet;
    while let Ok(e) = tokio::time::timeout_at(end, events.recv()).await {
        if matches!(e, Ok(NodeEvent::Suspected { .. } | NodeEvent::Down { .. })) {
            false_suspicions += 1;
        }
    }
    drop(peers);
    drop(watcher);
    let (killed, frozen) = (Spread::of(&killed), Spread::of(&frozen));
    let failover = if failovers > 0 { Some(singleton_failovers(failovers).await?) } else { None };
    let mut out = serde_json::json!({
        "node_down_killed_p50_ms": {"warden": killed.p50},
        "node_down_killed_p99_ms": {"warden": killed.p99},
        "node_down_frozen_p50_ms": {"warden": frozen.p50},
        "node_down_frozen_p99_ms": {"warden": frozen.p99},
        "false_suspicions": {"warden": false_suspicions},
    });
    if let Some(c) = commits {
        out["replicated_commit_per_s"] = serde_json::json!({"warden": c.per_s.round()});
        out["replicated_commit_p50_ms"] = serde_json::json!({"warden": c.latency_ms.p50});
        out["replicated_commit_p99_ms"] = serde_json::json!({"warden": c.latency_ms.p99});
        out["replicated_commit_writers"] = serde_json::json!({"warden": c.writers});
        out["replicated_commit_hosting_nodes"] = serde_json::json!({"warden": c.hosting_nodes});
    }
    if let Some(f) = failover {
        let back = Spread::of(&f.auditor_back);
        out["singleton_failover_p50_ms"] = serde_json::json!({"warden": back.p50});
        out["singleton_failover_p99_ms"] = serde_json::json!({"warden": back.p99});
        for (name, values) in [("leader_killed", &f.leader_killed), ("follower_killed", &f.follower_killed)] {
            if !values.is_empty() {
                let s = Spread::of(values);
                out[format!("failover_{name}_p50_ms")] = serde_json::json!({"warden": s.p50});
                out[format!("failover_{name}_p99_ms")] = serde_json::json!({"warden": s.p99});
            }
        }
        out["singleton_failover_invariant_ok"] = serde_json::json!({"warden": f.invariant_ok});
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    eprintln!(
        "bench-cluster: {commit_writers} writers for {} s, {reps} kills and {reps} freezes, {} s quiet run, {failovers} singleton failovers",
        commit_for.as_secs(),
        quiet.as_secs()
    );
    Ok(())
}
