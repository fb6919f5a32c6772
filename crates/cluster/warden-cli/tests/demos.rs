//! The bundled demo clusters, run as users run them: `warden demo` starts three real node
//! processes on loopback, injects faults (seeded chaos, or a plan aimed at the singletons),
//! and its JSON report must show the invariant held and every fault detected and recovered.
//! A last test kills the launcher itself with SIGKILL and checks that no node survives it.
//!
//! The runs take the machine for about half a minute each; they run one at a time.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One demo at a time: two clusters side by side on two cores would measure each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run_demo(args: &[&str], report: &Path) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("demo")
        .args(args)
        .arg("--quiet")
        .arg("--report")
        .arg(report)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run warden demo");
    let text = std::fs::read_to_string(report).unwrap_or_else(|e| {
        panic!("no report ({e}); stderr: {}", String::from_utf8_lossy(&out.stderr));
    });
    (out.status.code().unwrap_or(-1), serde_json::from_str(&text).expect("the report is JSON"))
}

fn faults(report: &Value) -> &Vec<Value> {
    report["faults"].as_array().expect("faults")
}

/// What every run must show: the invariant, no loss, every fault detected and recovered,
/// each singleton once, the key singleton's counter never going back.
fn assert_sound(code: i32, r: &Value) {
    let summary = serde_json::to_string_pretty(r).unwrap_or_default();
    assert_eq!(r["invariant_ok"], true, "{summary}");
    assert_eq!(code, 0, "exit code with the invariant held");
    assert_eq!(r["lost_acknowledged_ops"], 0, "{summary}");
    assert!(r["acknowledged_ops"].as_u64().unwrap_or(0) > 100, "the workload ran: {summary}");
    for f in faults(r) {
        assert!(f["detected_at_ms"].is_u64(), "undetected fault {f} in {summary}");
        assert!(f["recovered_at_ms"].is_u64(), "unrecovered fault {f} in {summary}");
    }
    assert_eq!(r["faults_injected"], faults(r).len());
    assert_eq!(r["details"]["singletons_exactly_once"], true, "{summary}");
    assert_eq!(r["details"]["key_singleton"]["counter_went_back"], 0, "{summary}");
    assert_eq!(r["false_suspicions"], 0, "{summary}");
    for field in
        ["demo", "nodes", "seed", "duration_s", "faults_detected", "mtbf_s", "mttr_ms", "availability", "invariant"]
    {
        assert!(r.get(field).is_some(), "report field {field} missing");
    }
    for field in ["detection_latency_ms", "recovery_time_ms"] {
        for q in ["p50", "p99", "max"] {
            assert!(r[field][q].is_number(), "{field}.{q} missing");
        }
    }
}

fn assert_every_kind(r: &Value) {
    for kind in ["panic", "hang", "kill", "stop", "restart"] {
        assert!(faults(r).iter().any(|f| f["kind"] == kind), "no {kind} fault in the chaos plan");
    }
}

#[test]
fn bank_keeps_its_money_through_a_seeded_chaos_run() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("bank.json");
    let (code, r) = run_demo(&["bank", "--nodes", "3", "--duration", "30s", "--seed", "7"], &report);
    assert_sound(code, &r);
    assert_every_kind(&r);
    assert_eq!(r["details"]["counted_total"], r["details"]["expected_total"]);
    assert_eq!(r["details"]["credits_in_flight"], 0);
    assert_eq!(r["seed"], 7);
    assert_eq!(r["nodes"], 3);
}

#[test]
fn pipeline_loses_no_job_through_a_seeded_chaos_run() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("pipeline.json");
    let (code, r) = run_demo(&["pipeline", "--nodes", "3", "--duration", "30s", "--seed", "11"], &report);
    assert_sound(code, &r);
    assert_every_kind(&r);
    let d = &r["details"];
    assert_eq!(d["jobs_without_outcome"], 0);
    assert_eq!(
        d["jobs_completed"].as_u64().unwrap() + d["jobs_failed"].as_u64().unwrap(),
        d["jobs_accepted"].as_u64().unwrap(),
        "every job completed or failed: {d}"
    );
    assert!(d["jobs_failed"].as_u64().unwrap() > 0, "poison jobs are reported failed");
}

#[test]
fn singletons_move_with_their_state_and_a_frozen_node_rejoins_without_a_second_one() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("singleton.json");
    let plan = "3s:kill:@auditor,8s:restart:@killed,12s:stop:@auditor:2s";
    let (code, r) = run_demo(&["bank", "--duration", "20s", "--faults", plan], &report);
    assert_sound(code, &r);
    let f = faults(&r);
    assert_eq!(f.len(), 3, "{f:?}");
    let (kill, stop) = (&f[0], &f[2]);
    assert_eq!(kill["kind"], "kill");
    assert!(
        kill["moved"].as_array().unwrap().iter().any(|m| m.as_str().unwrap().starts_with("auditor -> ")),
        "the auditor moved off the killed node: {kill}"
    );
    // It answered from another node with a counter at least where it was: its state came along.
    let back = kill["singleton_back_ms"].as_u64().expect("the auditor answered after the kill");
    assert!(back < 10_000, "{back} ms");
    assert!(r["details"]["key_singleton"]["answered_from"].as_array().unwrap().len() >= 2, "{r}");
    assert!(r["details"]["key_singleton"]["highest_counter"].as_u64().unwrap() > 3);
    assert_eq!(stop["kind"], "stop");
    assert!(stop["singleton_back_ms"].is_u64(), "the auditor left the frozen node: {stop}");
    assert!(stop["rejoined_at_ms"].is_u64(), "the frozen node rejoined after SIGCONT: {stop}");
    assert!(stop["detected_at_ms"].as_u64().unwrap() - stop["injected_at_ms"].as_u64().unwrap() < 5_000);
}

/// The pids of `parent`'s children, from /proc.
fn children(parent: u32) -> Vec<i32> {
    let mut pids = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) {
        for t in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(t.path().join("children")) {
                pids.extend(list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    pids
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

#[test]
fn no_node_outlives_a_killed_launcher() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // A stopped node too: it cannot read its stdin, so only the parent-death signal ends it.
    let mut launcher = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["demo", "bank", "--duration", "60s", "--faults", "1s:stop:n2:50s", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the launcher");
    let deadline = Instant::now() + Duration::from_secs(60);
    let nodes = loop {
        let c = children(launcher.id());
        if c.len() == 3 {
            break c;
        }
        assert!(Instant::now() < deadline, "the launcher did not start 3 nodes: {c:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(4)); // the plan has stopped n2 by now
    let stopped = nodes.iter().filter(|p| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('T')))
            .unwrap_or(false)
    });
    assert_eq!(stopped.count(), 1, "one node is stopped");
    launcher.kill().expect("SIGKILL the launcher");
    let _ = launcher.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "orphan node processes: {:?}",
            nodes.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
