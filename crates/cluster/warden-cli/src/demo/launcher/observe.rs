//! The observer of a demo run (`--observe`): twice a second the launcher asks every running
//! node for its view (trees, crash reports, peers, the group), adds what it knows (node
//! processes, faults, progress) and publishes the whole as one snapshot; the page's fault
//! buttons come back here as faults injected like planned ones.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use warden_observe::snapshot::{ClusterSnapshot, FaultView, NodeEntry, NodeState, NodeView, Progress, Targets};
use warden_observe::web::{FaultKind, FaultRequest, Observer, ObserverConfig};

use super::world::Proc;
use super::{faults, Launcher};
use crate::demo::plan::{Action, ActorTarget, Fault, NodeRef};
use crate::demo::protocol::{Answer, Op};

/// How often the page is refreshed.
pub const EVERY: Duration = Duration::from_millis(500);
/// How long a node may take to describe itself.
pub const ASK_TIMEOUT: Duration = Duration::from_millis(1500);

/// A snapshot of the whole cluster, as the page draws it.
async fn snapshot(l: &Arc<Launcher>) -> ClusterSnapshot {
    let procs: Vec<(String, Proc)> = l.world().nodes.iter().map(|(n, i)| (n.clone(), i.proc)).collect();
    let mut asks = tokio::task::JoinSet::new();
    for (i, (name, proc)) in procs.iter().enumerate() {
        if *proc == Proc::Up {
            let (l, name) = (l.clone(), name.clone());
            asks.spawn(async move { (i, l.request(&name, Op::Observe, ASK_TIMEOUT).await) });
        }
    }
    let mut observed: Vec<Option<NodeView>> = vec![None; procs.len()];
    while let Some(Ok((i, answer))) = asks.join_next().await {
        if let Some(Answer::Observe(o)) = answer {
            observed[i] = Some(*o);
        }
    }
    let nodes: Vec<NodeEntry> = procs
        .iter()
        .zip(observed)
        .map(|((name, proc), observed)| NodeEntry {
            name: name.clone(),
            state: match proc {
                Proc::Up => NodeState::Up,
                Proc::Killed => NodeState::Killed,
                Proc::Stopped => NodeState::Stopped,
                Proc::Left => NodeState::Left,
            },
            addr: l.addr_of(name).map(|a| a.to_string()),
            observed,
        })
        .collect();
    let names: Vec<String> = procs.iter().map(|p| p.0.clone()).collect();
    let targets = l.demo.targets(&names, l.settings.accounts, l.net.partitions());
    let faults = l
        .world()
        .faults
        .iter()
        .map(|f| FaultView {
            kind: f.rec.kind.clone(),
            target: f.rec.target.clone(),
            injected_at_ms: f.rec.injected_at_ms,
            detected_at_ms: f.rec.detected_at_ms,
            recovered_at_ms: f.rec.recovered_at_ms,
        })
        .collect();
    ClusterSnapshot {
        demo: Some(l.demo.name().to_string()),
        demo_mode: true,
        ready: l.ready.load(Ordering::Relaxed),
        elapsed_ms: l.now(),
        progress: Some(Progress {
            acknowledged: l.acked.load(Ordering::Relaxed),
            failed: l.failed.load(Ordering::Relaxed),
        }),
        nodes,
        faults,
        targets: Some(Targets { actors: targets.actors, nodes: targets.nodes }),
    }
}

/// Turns a click into a fault: checked against the demo's targets, injected now; a killed
/// node is started again 5 s later, a frozen one resumed after 3 s.
async fn clicked(l: &Arc<Launcher>, req: &FaultRequest) -> Result<String, String> {
    let names: Vec<String> = l.world().nodes.keys().cloned().collect();
    let targets = l.demo.targets(&names, l.settings.accounts, l.net.partitions());
    let node = NodeRef::Named(req.target.clone());
    let action = match req.kind {
        FaultKind::Panic => Action::Panic(ActorTarget::parse(&req.target)),
        FaultKind::Hang => Action::Hang(ActorTarget::parse(&req.target)),
        FaultKind::Kill => Action::Kill(node),
        FaultKind::Stop => Action::Stop(node, Duration::from_secs(3)),
    };
    let node_fault = matches!(action, Action::Kill(_) | Action::Stop(..));
    let known = if node_fault { &targets.nodes } else { &targets.actors };
    if !known.contains(&req.target) {
        return Err(format!("no {} {:?} in this demo", if node_fault { "node" } else { "actor" }, req.target));
    }
    if node_fault {
        let up = l.up_nodes();
        if !up.contains(&req.target) {
            return Err(format!("{} is not running", req.target));
        }
        let members = l.world().nodes.values().filter(|n| n.proc != Proc::Left).count();
        if (up.len() - 1) * 2 <= members {
            return Err("another node is already down: losing this one too would lose the majority".into());
        }
    }
    let base = l.slots().values().next().and_then(|s| s.data_dir.parent().map(|p| p.to_path_buf())).unwrap_or_default();
    let fault = Fault { at: Duration::ZERO, action: action.clone() };
    faults::inject(l, &fault, &base).await;
    if matches!(action, Action::Kill(_)) {
        let (l, target) = (l.clone(), req.target.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let restart = Fault { at: Duration::ZERO, action: Action::Restart(NodeRef::Named(target)) };
            faults::inject(&l, &restart, &base).await;
        });
    }
    Ok(format!("{} {}", req.kind, req.target))
}

/// Starts the observer; prints its address.
pub async fn start(l: Arc<Launcher>, addr: std::net::SocketAddr) -> anyhow::Result<Observer> {
    let first =
        ClusterSnapshot { demo: Some(l.demo.name().to_string()), demo_mode: true, ..ClusterSnapshot::default() };
    let (snap_tx, snap_rx) = tokio::sync::watch::channel(first);
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
                let w = lp.world();
                let up = w.nodes.values().filter(|n| n.proc == Proc::Up).count();
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
            tokio::time::sleep(EVERY).await;
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
