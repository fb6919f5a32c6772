//! Node failure detection against real node processes: a SIGKILLed node and a SIGSTOPped
//! (frozen) node are both declared down by the node watching them, and a frozen node rejoins
//! with a new session once it runs again. ractor_cluster alone notices the first only through
//! the closed socket and never notices the second.
//!
//! The peer nodes are this test binary run again (see `support`).

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use warden_cluster::{DownCause, NodeEvent, Transport, TransportConfig};

mod support;
use support::*;

/// The peer process (see `support`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the peer process of the node tests"]
async fn peer_node() {
    run_peer_node().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_frozen_nodes_are_declared_down() {
    let watcher = Transport::start(TransportConfig::new("watcher", "test-cookie")).await.unwrap();
    let mut events = watcher.subscribe();
    // The last case freezes right after the handshake, before any heartbeat history exists.
    let cases = [
        ("killed", Signal::SIGKILL, Duration::from_millis(500)),
        ("frozen", Signal::SIGSTOP, Duration::from_millis(500)),
        ("frozen-early", Signal::SIGSTOP, Duration::ZERO),
    ];
    for (name, signal, warm_up) in cases {
        let peer = spawn_peer(name, watcher.addr());
        assert!(
            wait_for(&mut events, |e| matches!(e, NodeEvent::Up { peer, .. } if peer == name)).await.is_some(),
            "{name} never came up"
        );
        // Let a history of heartbeats build up (or not).
        tokio::time::sleep(warm_up).await;
        let t = Instant::now();
        kill(Pid::from_raw(peer.0.id() as i32), signal).unwrap();
        let down = wait_for(&mut events, |e| matches!(e, NodeEvent::Down { peer, .. } if peer == name)).await;
        let took = t.elapsed();
        let Some(NodeEvent::Down { cause, .. }) = down else { panic!("{name} node never declared down") };
        eprintln!("{name} node declared down after {took:?} ({cause})");
        if signal == Signal::SIGSTOP {
            assert!(
                matches!(cause, DownCause::NoHeartbeat { .. }),
                "a frozen node keeps its socket: only heartbeats can tell ({cause})"
            );
            // Woken up, it finds its old session ended and rejoins with a new one.
            kill(Pid::from_raw(peer.0.id() as i32), Signal::SIGCONT).unwrap();
            let t = Instant::now();
            assert!(
                wait_for(&mut events, |e| matches!(e, NodeEvent::Up { peer, .. } if peer == name)).await.is_some(),
                "{name} did not rejoin after SIGCONT"
            );
            eprintln!("{name} node rejoined {:?} after SIGCONT", t.elapsed());
        }
        drop(peer);
    }
}
