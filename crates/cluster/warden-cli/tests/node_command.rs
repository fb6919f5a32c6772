//! `warden node` as users run it: node processes meet over loopback, print what they see as JSON
//! lines (the same report shape as the demo's nodes), form a group with `--join`, and see each
//! other go down when killed.

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
    start_with(name, connect, &[])
}

fn start_with(name: &str, connect: Option<&str>, extra: &[&str]) -> NodeProc {
    let mut args = extra.to_vec();
    if !extra.contains(&"--join") && !extra.contains(&"--found") {
        args.push("--found"); // a group of its own (these tests mesh nodes with --connect)
    }
    start_exactly(name, connect, &args)
}

/// `warden node` with exactly these flags (no `--found` added).
fn start_exactly(name: &str, connect: Option<&str>, extra: &[&str]) -> NodeProc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.args(["node", "--name", name, "--cookie", "secret"]).args(extra);
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
    let ready = wait(&a, "ready line", |v| v["ev"] == "ready");
    let addr = ready["addr"].as_str().unwrap().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "loopback by default: {addr}");
    let b = start("beta", Some(&addr));
    wait(&a, "beta up", |v| peer(v, "up", "beta"));
    wait(&b, "alpha up", |v| peer(v, "up", "alpha"));
    drop(b); // SIGKILL
    let down = wait(&a, "beta down", |v| peer(v, "down", "beta"));
    // The cause is a type, `{"why": ...}`: a killed process's socket closes (`session_closed`),
    // unless its heartbeats were missed first (`no_heartbeat`, with the suspicion level).
    let why = &down["event"]["cause"]["why"];
    assert!(why == "session_closed" || why == "no_heartbeat", "{down}");
}

/// A peer event of `kind` about `name`.
fn peer(v: &serde_json::Value, kind: &str, name: &str) -> bool {
    v["ev"] == "peer" && v["event"]["kind"] == kind && v["event"]["peer"] == name
}

#[test]
fn a_node_joins_a_running_group_and_follows_its_leader() {
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("alpha").to_string_lossy().into_owned();
    let a = start_with("join-alpha", None, &["--data-dir", &a_dir]);
    let ready = wait(&a, "ready line", |v| v["ev"] == "ready");
    let (addr, alpha_id) = (ready["addr"].as_str().unwrap().to_string(), ready["id"].as_u64().unwrap());
    wait(&a, "alpha leads", |v| v["ev"] == "cluster" && v["event"]["kind"] == "leader" && v["event"]["id"] == alpha_id);
    let b = start_with("join-beta", None, &["--join", &addr]);
    // beta hears of alpha's leadership as a learner, is promoted, and renews its lease through
    // the group (it serves), in whichever order its events come.
    let (mut joined, mut follows, mut serves) = (false, false, false);
    while !(joined && follows && serves) {
        let v = wait(&b, "beta joined, follows alpha and serves", |v| v["ev"] == "cluster");
        joined |= v["event"]["kind"] == "joined";
        follows |= v["event"]["kind"] == "leader" && v["event"]["id"] == alpha_id;
        serves |= v["event"]["kind"] == "serving";
    }
}

/// A follower that hears its leader's process is gone stands for election as soon as the
/// voters' leases allow (`raft::standing`), reports that step, and a survivor leads. Before
/// early standing no node reported the step (the survivors waited for openraft's own timer).
#[test]
fn a_follower_stands_as_soon_as_its_killed_leader_is_down_and_a_survivor_leads() {
    let a = start_with("stand-alpha", None, &[]);
    let ready = wait(&a, "ready line", |v| v["ev"] == "ready");
    let (addr, alpha_id) = (ready["addr"].as_str().unwrap().to_string(), ready["id"].as_u64().unwrap());
    wait(&a, "alpha leads", |v| v["ev"] == "cluster" && v["event"]["kind"] == "leader" && v["event"]["id"] == alpha_id);
    let followers =
        [start_with("stand-beta", None, &["--join", &addr]), start_with("stand-gamma", None, &["--join", &addr])];
    let mut ids = Vec::new();
    for f in &followers {
        ids.push(wait(f, "ready line", |v| v["ev"] == "ready")["id"].as_u64().unwrap());
        wait(f, "promoted to voter", |v| v["ev"] == "cluster" && v["event"]["kind"] == "joined");
    }
    drop(a); // SIGKILL: its sessions close at once
    let (mut stood, mut new_leader, mut seen) = (false, None, Vec::new());
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while new_leader.is_none() || !stood {
        assert!(std::time::Instant::now() < until, "stood: {stood}, new leader: {new_leader:?}; seen: {seen:?}");
        for f in &followers {
            while let Ok(v) = f.lines.try_recv() {
                if v["ev"] != "cluster" {
                    continue;
                }
                seen.push(v.to_string());
                let e = &v["event"];
                if e["kind"] == "phase" && e["step"] == "stand" {
                    assert_eq!(e["detail"], alpha_id.to_string(), "the step names the lost leader: {v}");
                    stood = true;
                }
                if e["kind"] == "leader" && e["id"] != alpha_id {
                    new_leader = e["id"].as_u64();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ids.contains(&new_leader.unwrap()), "a survivor leads: {new_leader:?} of {ids:?}");
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

/// Writes a cluster CA and a node certificate for "warden-node" as PEM files.
fn pem_files(dir: &std::path::Path) -> [String; 3] {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["warden-node".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let paths = ["ca.pem", "node.pem", "node.key"].map(|f| dir.join(f).to_string_lossy().into_owned());
    std::fs::write(&paths[0], ca.pem()).unwrap();
    std::fs::write(&paths[1], cert.pem()).unwrap();
    std::fs::write(&paths[2], key.serialize_pem()).unwrap();
    paths
}

#[test]
fn nodes_meet_over_mutual_tls_from_pem_files() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key] = pem_files(dir.path());
    let tls = ["--tls-ca", ca.as_str(), "--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    let a = start_with("tls-alpha", None, &tls);
    let addr = wait(&a, "ready line", |v| v["ev"] == "ready")["addr"].as_str().unwrap().to_string();
    let b = start_with("tls-beta", Some(&addr), &tls);
    wait(&a, "beta up", |v| peer(v, "up", "tls-beta"));
    wait(&b, "alpha up", |v| peer(v, "up", "tls-alpha"));
}

#[test]
fn tls_flags_are_checked_and_bad_files_named() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["node", "--name", "x", "--cookie", "c"])
            .args(extra)
            .output()
            .expect("run warden node")
    };
    let partial = run(&["--tls-ca", "ca.pem"]);
    assert!(!partial.status.success());
    assert!(String::from_utf8_lossy(&partial.stderr).contains("go together"));
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let j = junk.to_string_lossy().into_owned();
    let bad = run(&["--tls-ca", &j, "--tls-cert", &j, "--tls-key", &j]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr).into_owned();
    assert!(err.contains("junk.pem"), "{err}");
}

#[test]
fn bench_cluster_measures_commits_detection_and_failover_with_real_node_processes() {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["bench-cluster", "--reps", "1", "--quiet-s", "1", "--failovers", "1", "--commit-writers", "6"])
        .args(["--commit-s", "1"])
        .output()
        .expect("run warden bench-cluster");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for fig in [
        "node_down_killed_p99_ms",
        "node_down_frozen_p99_ms",
        "singleton_failover_p99_ms",
        "replicated_commit_per_s",
        "replicated_commit_p50_ms",
        "replicated_commit_p99_ms",
    ] {
        let v = json[fig]["warden"].as_f64().unwrap_or_else(|| panic!("{fig} missing: {json}"));
        assert!(v.is_finite() && v > 0.0, "{fig}: {v}");
    }
    assert_eq!(json["false_suspicions"]["warden"].as_u64(), Some(0), "{json}");
    assert_eq!(json["replicated_commit_writers"]["warden"].as_u64(), Some(6), "{json}");
    // The writers spread over the group's nodes (all three run their specs).
    assert!(json["replicated_commit_hosting_nodes"]["warden"].as_u64().unwrap_or(0) >= 2, "{json}");
}

/// One HTTP request through a real client (hyper's, on a runtime of its own: this test is
/// synchronous): the status code and the body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a well-formed request");
        let answer = tokio::time::timeout(Duration::from_secs(10), client.request(request))
            .await
            .expect("the observer answers")
            .expect("an HTTP answer");
        let code = answer.status().as_u16();
        let bytes = answer.into_body().collect().await.expect("read the body").to_bytes();
        (code, String::from_utf8_lossy(&bytes).into_owned())
    })
}

#[test]
fn a_node_serves_the_observer_on_loopback_without_fault_injection() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["node", "--name", "gamma", "--cookie", "secret", "--found", "--observe"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run warden node --observe");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let url = stderr
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("observer: http://").map(|u| u.trim_end_matches('/').to_string()))
        .expect("the node printed the observer's address");
    assert!(url.starts_with("127.0.0.1:"), "loopback by default: {url}");
    let (code, page) = http(&url, "GET", "/", "");
    assert_eq!(code, 200);
    assert!(page.contains("warden observer") && page.contains("EventSource"), "the embedded page");
    assert_eq!(http(&url, "GET", "/health/live", "").0, 200);
    assert_eq!(http(&url, "GET", "/health/ready", "").0, 200);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, snapshot) = http(&url, "GET", "/api/snapshot", "");
        let typed: warden_observe::snapshot::ClusterSnapshot = serde_json::from_str(&snapshot)
            .unwrap_or_else(|e| panic!("the snapshot is the observer's type: {e}: {snapshot}"));
        if let Some(me) = typed.nodes.iter().find(|n| n.name == "gamma") {
            assert!(!typed.demo_mode, "{snapshot}");
            assert!(me.observed.as_ref().is_some_and(|v| v.node == "gamma"), "the node's own view: {snapshot}");
            break;
        }
        assert!(std::time::Instant::now() < until, "the snapshot never named the node: {snapshot}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _) = http(&url, "POST", "/api/fault", r#"{"kind":"kill","target":"gamma"}"#);
    assert_eq!(code, 404, "no fault injection outside demo mode");
    assert!(http(&url, "GET", "/metrics", "").0 == 200, "the Prometheus text is served");
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `warden node` with `args` until it exits (at most 15 s): its status and stderr, or
/// `None` when it was still running (it was then killed).
fn run_to_exit(args: &[&str]) -> Option<(std::process::ExitStatus, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("node")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run warden node");
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < until {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
            return Some((status, err));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_node_with_no_past_and_nothing_to_join_does_not_found_a_group_by_itself() {
    // A founder whose disk was lost, restarted with its usual command line (no --join):
    // founding a second group silently would split the cluster in two.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("lost");
    let data = data.to_string_lossy().into_owned();
    let args = ["--name", "lost", "--cookie", "c", "--data-dir", data.as_str()];
    let (status, err) = run_to_exit(&args).expect("it refuses to start (it founded a group of its own instead)");
    assert!(!status.success());
    assert!(err.contains("nothing to join") && err.contains("--found") && err.contains("--join"), "{err}");

    // Founding is explicit; once the node has a past it starts without --found.
    let founder = start_with("founder", None, &["--found", "--data-dir", data.as_str()]);
    wait(&founder, "ready line", |v| v["ev"] == "ready");
    drop(founder);
    let again = start_exactly("founder", None, &["--data-dir", data.as_str()]);
    wait(&again, "ready line after a restart with its past", |v| v["ev"] == "ready");
}
