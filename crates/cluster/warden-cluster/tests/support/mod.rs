//! What the process-level node tests share: the peer node process (the test binary run again
//! with `--ignored --exact peer_node`) and helpers to start it and wait for events.
#![allow(dead_code)]

pub mod pki;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use warden_cluster::{NodeEvent, Transport, TransportConfig};

pub const DEADLINE: Duration = Duration::from_secs(20);

/// The body of each binary's `peer_node` test: a node that connects to `WARDEN_PEER_OF` and
/// then idles (with a short-lived watchable actor if `WARDEN_PEER_TARGET_MS` is set).
pub async fn run_peer_node() {
    let (Ok(name), Ok(target)) = (std::env::var("WARDEN_PEER_NAME"), std::env::var("WARDEN_PEER_OF")) else {
        panic!("run by the detection tests only");
    };
    let node = Transport::start(TransportConfig::new(name, "test-cookie")).await.expect("peer starts");
    // A short-lived actor others can watch, when asked for.
    if let Ok(ms) = std::env::var("WARDEN_PEER_TARGET_MS") {
        let (target, _) = Actor::spawn(None, Target, ms.parse::<u64>().expect("ms")).await.expect("target");
        ractor::pg::join(TARGETS.to_string(), vec![target.get_cell()]);
    }
    node.connect(target.parse().expect("an address")).await.expect("peer connects");
    println!("ready");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

pub const TARGETS: &str = "warden.test.targets";

/// An actor that stops itself after the given number of milliseconds.
pub struct Target;

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

pub struct Peer(pub Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.0.id() as i32);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn_peer(name: &str, target: std::net::SocketAddr) -> Peer {
    spawn_peer_with(name, target, None)
}

pub fn spawn_peer_with(name: &str, target: std::net::SocketAddr, target_ms: Option<u64>) -> Peer {
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

pub async fn wait_for(
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
