//! The walk-through of docs/cluster.md, run for real: three processes of the example found
//! and join a cluster, a durable counter takes `add`s through any node, the node hosting it is
//! killed and the counter answers from another with every acknowledged `add`, the killed node
//! rejoins from its data directory, a fourth node joins and then leaves in order, and every
//! read is linearizable.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a step may take (generous: debug builds on two busy cores).
const STEP: Duration = Duration::from_secs(60);

struct App {
    name: String,
    /// Its stderr (logs), shown when a step fails.
    log: std::path::PathBuf,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl App {
    /// Starts node `name` on `port` (a node restarted with its data directory comes back on
    /// its address, as the walk-through's nodes do with `--port`).
    /// `join`: a member to join through; `None`: the node founds the group when `found`, or
    /// resumes from its data directory.
    fn start(name: &str, dir: &Path, port: u16, join: Option<&str>, found: bool) -> App {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cluster_app"));
        cmd.args(["--name", name, "--cookie", "walkthrough", "--port", &port.to_string(), "--data-dir"])
            .arg(dir.join(name));
        if let Some(addr) = join {
            cmd.args(["--join", addr]);
        }
        if found {
            cmd.arg("--found");
        }
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("a log file");
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr).spawn().expect("start cluster_app");
        let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        App { name: name.to_string(), log, child, stdin, lines }
    }

    /// The last lines of its log.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// The next line for which `pred` holds.
    fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + STEP;
        loop {
            match self.lines.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(v) if pred(&v) => return v,
                Ok(_) => continue,
                Err(e) => {
                    let status = self.child.try_wait();
                    panic!(
                        "{}: no {what}: {e} (process: {status:?}); its last log lines:\n{}",
                        self.name,
                        self.log_tail()
                    )
                }
            }
        }
    }

    /// Sends `command` and returns its answer (the next line that is not an event).
    fn ask(&mut self, command: &str) -> Value {
        writeln!(self.stdin, "{command}").expect("write a command");
        self.wait(&format!("answer to {command:?}"), |v| v.get("event").is_none() && v.get("ready").is_none())
    }

    /// Repeats `command` until it answers a value (the cluster may still be electing or moving).
    fn value(&mut self, command: &str) -> (u64, String) {
        let until = Instant::now() + STEP;
        loop {
            let a = self.ask(command);
            if let Some(v) = a["value"].as_u64() {
                return (v, a["on"].as_str().unwrap_or_default().to_string());
            }
            assert!(Instant::now() < until, "{}: {command:?} kept failing: {a}", self.name);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

#[test]
fn a_cluster_of_the_example_keeps_its_counter_through_a_kill_a_rejoin_a_join_and_a_leave() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut n1 = App::start("n1", dir.path(), ports[0], None, true);
    let addr = n1.wait("ready line", |v| v.get("ready").is_some())["ready"]["addr"].as_str().unwrap().to_string();
    let mut apps = vec![
        n1,
        App::start("n2", dir.path(), ports[1], Some(&addr), false),
        App::start("n3", dir.path(), ports[2], Some(&addr), false),
    ];
    let mut addrs = vec![addr];
    for app in &mut apps[1..] {
        let ready = app.wait("ready line", |v| v.get("ready").is_some());
        addrs.push(ready["ready"]["addr"].as_str().unwrap().to_string());
        app.wait("joined event", |v| v["event"] == "joined");
    }

    // Adds through every node; each acknowledged one counts.
    let mut total = 0;
    for (i, n) in [(0, 5), (1, 7), (2, 11)] {
        let (v, _) = apps[i].value(&format!("add {n}"));
        total += n;
        assert_eq!(v, total, "each add sees the ones before it");
    }
    let (v, host) = apps[2].value("get");
    assert_eq!(v, total, "a linearizable read sees every acknowledged add");

    // Kill the node hosting the counter: another node takes it over with its state.
    let killed = apps.iter().position(|a| a.name == host).expect("the host is one of ours");
    let _ = apps[killed].child.kill();
    let _ = apps[killed].child.wait();
    let other = (killed + 1) % 3;
    let (v, now_on) = apps[other].value("get");
    assert_eq!(v, total, "no acknowledged add was lost with {host}");
    assert_ne!(now_on, host, "the counter moved off the killed node");
    let (v, _) = apps[other].value("add 1");
    total += 1;
    assert_eq!(v, total);

    // The killed node restarts with its data directory and rejoins as the member it was.
    let name = apps[killed].name.clone();
    apps[killed] = App::start(&name, dir.path(), ports[killed], None, false);
    apps[killed].wait("serving event", |v| v["event"] == "serving");
    let (v, _) = apps[killed].value("get");
    assert_eq!(v, total);

    // A fourth node joins, takes requests, and leaves in order.
    let mut n4 = App::start("n4", dir.path(), free_port(), Some(&addrs[other]), false);
    n4.wait("joined event", |v| v["event"] == "joined");
    let (v, _) = n4.value("add 2");
    total += 2;
    assert_eq!(v, total);
    let left = n4.ask("leave");
    assert_eq!(left["left"], true, "{left}; n4's log:\n{}", n4.log_tail());
    assert!(n4.child.wait().unwrap().success(), "n4 exits after leaving");
    let (v, _) = apps[0].value("get");
    assert_eq!(v, total, "nothing lost when n4 left");
    for app in &mut apps {
        let where_ = app.ask("where");
        assert!(where_["hosted"].is_array(), "{where_}");
    }
}
