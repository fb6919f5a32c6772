//! Remote monitoring against a real node process: a watched actor on another node reports its
//! exit while its node lives, and another reports its node's death. A binary of its own: nodes
//! in one process share the process-wide heartbeat group, so these tests do not share a process
//! with other node tests.
//!
//! The peer node is this test binary run again with `--ignored --exact peer_node`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use warden_cluster::{Node, NodeConfig, NodeEvent, RemoteDown, HEARTBEAT_GROUP};

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

/// The first remote member of `group`, waiting for it to appear.
async fn remote_member(group: &str) -> ractor::ActorCell {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(c) = ractor::pg::get_members(&group.to_string()).into_iter().find(|c| !c.get_id().is_local()) {
            return c;
        }
        assert!(tokio::time::Instant::now() < until, "no remote member of {group}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_remote_actor_reports_its_exit_and_its_nodes_death() {
    let watcher = Node::start(NodeConfig::new("watcher-2", "test-cookie")).await.unwrap();
    let mut events = watcher.subscribe();
    let peer = spawn_peer_with("host", watcher.addr(), Some(1500));
    assert!(wait_for(&mut events, |e| matches!(e, NodeEvent::Up { peer, .. } if peer == "host")).await.is_some());
    // The short-lived actor exits while its node lives on.
    let target = remote_member(TARGETS).await;
    let exited = tokio::time::timeout(DEADLINE, watcher.watch(target).await.unwrap()).await.expect("in time").unwrap();
    assert!(matches!(&exited, RemoteDown::Exited { node, .. } if node == "host"), "{exited:?}");
    // Its heartbeat receiver goes with its node.
    let receiver = remote_member(HEARTBEAT_GROUP).await;
    let gone = watcher.watch(receiver).await.unwrap();
    kill(Pid::from_raw(peer.0.id() as i32), Signal::SIGKILL).unwrap();
    let why = tokio::time::timeout(DEADLINE, gone).await.expect("in time").unwrap();
    assert!(
        matches!(&why, RemoteDown::NodeDown { node, .. } | RemoteDown::Exited { node, .. } if node == "host"),
        "{why:?}"
    );
    // Local actors are not for watching.
    let local =
        ractor::pg::get_members(&HEARTBEAT_GROUP.to_string()).into_iter().find(|c| c.get_id().is_local()).unwrap();
    assert!(watcher.watch(local).await.is_err());
}
