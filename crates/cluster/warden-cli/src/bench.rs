//! `warden bench-cluster`: node failure detection measured against real node processes.
//!
//! A watcher node runs in this process; each repetition starts one peer (this binary, `warden
//! node`) that connects to it, waits until the watcher sees it up plus half a second of
//! heartbeats, then SIGKILLs or SIGSTOPs it and times the watcher's `Down` event. Then three
//! idle nodes (the watcher and two peers) run for a while and every `Suspected` or `Down` the
//! watcher reports is a false suspicion. Prints one JSON object; percentiles are nearest-rank
//! over the repetitions (with 20, p99 is the largest). Last, a 3-node bank demo in which the
//! node hosting the auditor singleton is killed again and again gives
//! `singleton_failover_p50_ms` / `_p99_ms`: kill until the auditor answers from another node
//! with its state.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::Signal;
use tokio::sync::broadcast::Receiver;
use warden_cluster::{Node, NodeConfig, NodeEvent};

use crate::demo::report::Spread;

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
        .args(["node", "--name", name, "--cookie", "bench", "--connect", &target.to_string()])
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

async fn time_down(watcher: &Node, events: &mut Receiver<NodeEvent>, name: &str, freeze: bool) -> anyhow::Result<f64> {
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

/// Singleton failover: a 3-node bank demo (real node processes) in which the node hosting the
/// auditor is killed `n` times (each restarted 4 s later); each time, from the kill until the
/// auditor answers from another node with its audit count at least where it was.
async fn singleton_failovers(n: usize) -> anyhow::Result<(Vec<f64>, bool)> {
    use crate::demo::{launcher, plan, Demo, RunSettings};
    let mut faults = Vec::new();
    for i in 0..n as u64 {
        let at = Duration::from_secs(3 + 8 * i);
        faults.push(plan::Fault { at, kind: plan::Kind::Kill, target: "@auditor".into(), hold: Duration::ZERO });
        faults.push(plan::Fault {
            at: at + Duration::from_secs(4),
            kind: plan::Kind::Restart,
            target: "@killed".into(),
            hold: Duration::ZERO,
        });
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
    let report = launcher::run(settings, faults, Default::default()).await?;
    let back: Vec<f64> = report.faults.iter().filter_map(|f| f.singleton_back_ms.map(|v| v as f64)).collect();
    anyhow::ensure!(back.len() == n, "the auditor came back after {} of {n} kills", back.len());
    Ok((back, report.invariant_ok))
}

pub async fn run(reps: usize, quiet: Duration, failovers: usize) -> anyhow::Result<()> {
    let watcher = Node::start(NodeConfig::new("bench-watcher", "bench")).await?;
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
    let (failover, invariant_ok) =
        if failovers > 0 { singleton_failovers(failovers).await? } else { (Vec::new(), true) };
    let mut out = serde_json::json!({
        "node_down_killed_p50_ms": {"warden": killed.p50},
        "node_down_killed_p99_ms": {"warden": killed.p99},
        "node_down_frozen_p50_ms": {"warden": frozen.p50},
        "node_down_frozen_p99_ms": {"warden": frozen.p99},
        "false_suspicions": {"warden": false_suspicions},
    });
    if !failover.is_empty() {
        let failover = Spread::of(&failover);
        out["singleton_failover_p50_ms"] = serde_json::json!({"warden": failover.p50});
        out["singleton_failover_p99_ms"] = serde_json::json!({"warden": failover.p99});
        out["singleton_failover_invariant_ok"] = serde_json::json!({"warden": invariant_ok});
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    eprintln!(
        "bench-cluster: {reps} kills and {reps} freezes, {} s quiet run, {failovers} singleton failovers",
        quiet.as_secs()
    );
    Ok(())
}
