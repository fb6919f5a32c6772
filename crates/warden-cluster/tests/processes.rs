//! Node failure detection against real node processes: a SIGKILLed node and a SIGSTOPped
//! (frozen) node are both declared down by the node watching them, and a frozen node rejoins
//! with a new session once it runs again. ractor_cluster alone notices the first only through
//! the closed socket and never notices the second.
//!
//! The peer nodes are this test binary run again with `--ignored --exact peer_node` and their
//! settings in environment variables.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use warden_cluster::{Node, NodeConfig, NodeEvent};

const DEADLINE: Duration = Duration::from_secs(20);

/// The peer process: a node that connects to `WARDEN_PEER_OF` and then idles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the peer process of the detection tests"]
async fn peer_node() {
    let (Ok(name), Ok(target)) = (std::env::var("WARDEN_PEER_NAME"), std::env::var("WARDEN_PEER_OF")) else {
        panic!("run by the detection tests only");
    };
    let node = Node::start(NodeConfig::new(name, "test-cookie")).await.expect("peer starts");
    // A short-lived actor others can watch, when asked for.
    if let Ok(ms) = std::env::var("WARDEN_PEER_TARGET_MS") {
        let (target, _) = Actor::spawn(None, Target, ms.parse::<u64>().expect("ms")).await.expect("target");
        ractor::pg::join(TARGETS.to_string(), vec![target.get_cell()]);
    }
    node.connect(target.parse().expect("an address")).await.expect("peer connects");
    println!("ready");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

const TARGETS: &str = "warden.test.targets";

/// An actor that stops itself after the given number of milliseconds.
struct Target;

impl Actor for Target {
    type Msg = String;
    type State = ();
    type Arguments = u64;
    async fn pre_start(&self, myself: ActorRef<String>, ms: u64) -> Result<(), ActorProcessingErr> {
        myself.send_after(Duration::from_millis(ms), || "stop".to_string());
        Ok(())
    }
    async fn handle(&self, myself: ActorRef<String>, _: String, _: &mut ()) -> Result<(), ActorProcessingErr> {
        myself.stop(None);
        Ok(())
    }
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.0.id() as i32);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_peer(name: &str, target: std::net::SocketAddr) -> Peer {
    spawn_peer_with(name, target, None)
}

fn spawn_peer_with(name: &str, target: std::net::SocketAddr, target_ms: Option<u64>) -> Peer {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    if let Some(ms) = target_ms {
        cmd.env("WARDEN_PEER_TARGET_MS", ms.to_string());
    }
    let mut child = cmd
        .args(["--ignored", "--exact", "peer_node", "--nocapture", "--test-threads", "1"])
        .env("WARDEN_PEER_NAME", name)
        .env("WARDEN_PEER_OF", target.to_string())
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn a peer node");
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    loop {
        match lines.next() {
            // libtest prints "test peer_node ... " without a newline before the test runs.
            Some(Ok(l)) if l.ends_with("ready") => break,
            Some(Ok(_)) => continue,
            other => panic!("the peer node did not start: {other:?}"),
        }
    }
    Peer(child)
}

async fn wait_for(
    rx: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    pred: impl Fn(&NodeEvent) -> bool,
) -> Option<NodeEvent> {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Ok(e)) if pred(&e) => return Some(e),
            Ok(Ok(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_frozen_nodes_are_declared_down() {
    let watcher = Node::start(NodeConfig::new("watcher", "test-cookie")).await.unwrap();
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
            assert!(cause.contains("heartbeat"), "a frozen node keeps its socket: only heartbeats can tell ({cause})");
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
