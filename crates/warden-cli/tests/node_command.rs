//! `warden node` as users run it: two node processes form a cluster over loopback, print their
//! events as JSON lines, and one sees the other go down when it is killed.

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct NodeProc {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reader(lines: Lines<BufReader<ChildStdout>>) -> mpsc::Receiver<serde_json::Value> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&l) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

fn start(name: &str, connect: Option<&str>) -> NodeProc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.args(["node", "--name", name, "--cookie", "secret"]);
    if let Some(addr) = connect {
        cmd.args(["--connect", addr]);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("run warden node");
    let out = child.stdout.take().unwrap();
    NodeProc { child, lines: reader(BufReader::new(out).lines()) }
}

fn wait(p: &NodeProc, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match p.lines.recv_timeout(left) {
            Ok(v) if pred(&v) => return v,
            Ok(_) => continue,
            Err(e) => panic!("no {what}: {e}"),
        }
    }
}

#[test]
fn two_node_processes_meet_and_one_sees_the_other_killed() {
    let a = start("alpha", None);
    let listening = wait(&a, "listening line", |v| v["event"] == "listening");
    let addr = listening["addr"].as_str().unwrap().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "loopback by default: {addr}");
    let b = start("beta", Some(&addr));
    wait(&a, "beta up", |v| v["event"] == "up" && v["peer"] == "beta");
    wait(&b, "alpha up", |v| v["event"] == "up" && v["peer"] == "alpha");
    drop(b); // SIGKILL
    let down = wait(&a, "beta down", |v| v["event"] == "down" && v["peer"] == "beta");
    assert!(down["cause"].is_string());
}

#[test]
fn an_empty_cookie_is_refused_with_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["node", "--name", "x", "--cookie", ""])
        .output()
        .expect("run warden node");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cookie must not be empty"));
}
