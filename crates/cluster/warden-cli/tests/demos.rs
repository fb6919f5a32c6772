//! The bundled demo clusters, run as users run them: `warden demo` starts real node processes,
//! injects faults (seeded chaos, or a plan aimed at what the cluster must survive: partitions
//! that drop real packets between network namespaces, a stalled disk, a node restarted with an
//! empty data directory, a node joining and one leaving), and its JSON report must show the
//! invariant held, the checker's verdict over every node's store and the client history clean,
//! and every fault detected and recovered. A last test kills the launcher itself with SIGKILL
//! and checks that no node survives it.
//!
//! Partitions need root (network namespaces and nftables): `.ci/run` runs as root, installs
//! nftables and sets `WARDEN_REQUIRE_NETNS=1`, under which a run that fell back to loopback
//! fails. Elsewhere the partition tests are skipped with a line saying so.
//!
//! `WARDEN_SOAK=1` adds a longer seeded soak (many chaos runs on 3 and 5 nodes; docs/demos.md).
//! The runs take the machine for about a minute each; they run one at a time.

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

/// Whether partitions can run here (root with ip, nft, nsenter and unshare); with
/// `WARDEN_REQUIRE_NETNS` set, they must.
fn partitions_here() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let tools = ["ip", "nft", "nsenter", "unshare"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !(root && tools) {
        assert!(
            std::env::var_os("WARDEN_REQUIRE_NETNS").is_none(),
            "WARDEN_REQUIRE_NETNS is set but this is not root with ip, nft, nsenter and unshare"
        );
        eprintln!("SKIPPED: partitions need root and nftables (.ci/run has both and requires this test)");
    }
    root && tools
}

/// What every run must show: the invariant, the checker's verdict, no loss, every fault
/// detected and recovered, each singleton once, the key singleton's counter never going back.
fn assert_sound(code: i32, r: &Value) {
    let summary = serde_json::to_string_pretty(r).unwrap_or_default();
    assert_eq!(r["invariant_ok"], true, "{summary}");
    let checker = &r["checker"];
    assert_eq!(checker["ok"], true, "the checker: {summary}");
    for list in
        ["disagreements", "tokens_with_two_writers", "replay_mismatches", "journaled_twice", "acknowledged_missing"]
    {
        assert_eq!(checker[list].as_array().map(Vec::len), Some(0), "checker.{list}: {summary}");
    }
    assert_eq!(checker["duplicate_write_serving_ms"], 0, "two instances wrote at once: {summary}");
    assert_eq!(code, 0, "exit code with the invariant and the checker held");
    assert_eq!(r["lost_acknowledged_ops"], 0, "{summary}");
    assert!(r["acknowledged_ops"].as_u64().unwrap_or(0) > 50, "the workload ran: {summary}");
    for f in faults(r) {
        assert!(f["detected_at_ms"].is_u64(), "undetected fault {f} in {summary}");
        assert!(f["recovered_at_ms"].is_u64(), "unrecovered fault {f} in {summary}");
    }
    assert_eq!(r["faults_injected"], faults(r).len());
    assert_eq!(r["details"]["singletons_exactly_once"], true, "{summary}");
    assert_eq!(r["details"]["key_singleton"]["counter_went_back"], 0, "{summary}");
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

fn kinds(r: &Value) -> Vec<String> {
    faults(r).iter().filter_map(|f| f["kind"].as_str().map(str::to_string)).collect()
}

fn assert_bank(r: &Value) {
    assert_eq!(r["details"]["counted_total"], r["details"]["expected_total"], "{r}");
    assert_eq!(r["details"]["credits_in_flight"], 0);
    assert_eq!(r["checker"]["linearizable"], true, "the register's reads: {r}");
    assert!(r["checker"]["register_ops"].as_u64().unwrap_or(0) > 10, "the register was used: {r}");
}

fn assert_pipeline(r: &Value) {
    let d = &r["details"];
    assert_eq!(d["jobs_without_outcome"], 0);
    assert_eq!(
        d["jobs_completed"].as_u64().unwrap() + d["jobs_failed"].as_u64().unwrap(),
        d["jobs_accepted"].as_u64().unwrap(),
        "every job completed or failed: {d}"
    );
}

/// A partial partition (n1 and n2 lose each other, both reach n3), a one-way cut, a stalled
/// disk, a node restarted empty, a node joining and one leaving, on 3 nodes.
#[test]
fn bank_keeps_its_money_through_partitions_a_slow_disk_a_wipe_a_join_and_a_leave_on_3_nodes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !partitions_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("bank.json");
    let plan = "2s:partition:n1|n2,5s:heal,6s:partition:n3>n1,8s:heal,9s:slow-disk:n2:1.5s,\
                12s:wipe:n3,15s:join:n4,19s:leave:n4,21s:kill:@leader,23s:restart:@killed";
    let (code, r) = run_demo(&["bank", "--nodes", "3", "--duration", "26s", "--faults", plan], &report);
    assert_sound(code, &r);
    assert_bank(&r);
    assert!(r["network"].as_str().unwrap_or("").contains("namespaces"), "{}", r["network"]);
    for kind in ["partition", "heal", "slow_disk", "wipe", "join", "leave", "kill", "restart"] {
        assert!(kinds(&r).iter().any(|k| k == kind), "no {kind} in {:?}", kinds(&r));
    }
    // The wiped node came back as a new member and served; the joined one served, then left.
    let wipe = faults(&r).iter().find(|f| f["kind"] == "wipe").unwrap();
    assert!(wipe["recovered_at_ms"].as_u64().unwrap() > wipe["injected_at_ms"].as_u64().unwrap());
}

/// The pipeline on 5 nodes: a 2|3 partition (the minority's singletons move to the majority,
/// and stop where they were), a slow disk, a wipe, a join, and the Raft leader killed.
#[test]
fn pipeline_loses_no_job_through_a_2_3_partition_a_slow_disk_a_wipe_and_a_join_on_5_nodes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !partitions_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("pipeline.json");
    let plan = "3s:partition:n1+n2|n3+n4+n5,7s:heal,9s:slow-disk:n3:1.5s,12s:wipe:n2,16s:join:n6,20s:kill:@leader";
    let (code, r) = run_demo(&["pipeline", "--nodes", "5", "--duration", "25s", "--faults", plan], &report);
    assert_sound(code, &r);
    assert_pipeline(&r);
    assert_eq!(r["nodes"], 5);
    for kind in ["partition", "heal", "slow_disk", "wipe", "join", "kill"] {
        assert!(kinds(&r).iter().any(|k| k == kind), "no {kind} in {:?}", kinds(&r));
    }
}

/// Seeded chaos (every kind the plan can fit, partitions included where they run) on 3 nodes
/// for the bank, and 5 for the pipeline.
#[test]
fn bank_and_pipeline_hold_through_seeded_chaos() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let partitions = partitions_here();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("bank.json");
    let (code, r) = run_demo(&["bank", "--nodes", "3", "--duration", "30s", "--seed", "7"], &report);
    assert_sound(code, &r);
    assert_bank(&r);
    assert_eq!((r["seed"].as_u64(), r["nodes"].as_u64()), (Some(7), Some(3)));
    if partitions {
        assert!(kinds(&r).iter().any(|k| k == "partition"), "chaos partitions where it can: {:?}", kinds(&r));
    }
    let report = dir.path().join("pipeline.json");
    let (code, r) = run_demo(&["pipeline", "--nodes", "5", "--duration", "30s", "--seed", "11"], &report);
    assert_sound(code, &r);
    assert_pipeline(&r);
}

#[test]
fn singletons_move_with_their_state_and_a_frozen_node_rejoins_without_a_second_one() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("singleton.json");
    // The freeze lasts 5 s: when the frozen node is the Raft leader, the auditor's failover
    // (election, the new leader's wait, eviction, start elsewhere: about 1.5 s in release) took
    // more than the 2 s this test used to freeze for in one debug run under load, and the
    // auditor then rightly stayed on the node that came back with its lease.
    let plan = "3s:kill:@auditor,8s:restart:@killed,12s:stop:@auditor:5s";
    let (code, r) = run_demo(&["bank", "--duration", "24s", "--faults", plan], &report);
    assert_sound(code, &r);
    assert_eq!(r["false_suspicions"], 0, "no suspicion without a fault: {r}");
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

/// The opt-in soak: `WARDEN_SOAK=1` (seeds from `WARDEN_SOAK_SEEDS`, default 10, each a 60 s
/// chaos run of the bank on 3 and on 5 nodes).
#[test]
fn soak_many_seeds_of_chaos_on_3_and_5_nodes() {
    if std::env::var_os("WARDEN_SOAK").is_none() {
        eprintln!("SKIPPED: the soak runs with WARDEN_SOAK=1 (docs/demos.md)");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let seeds: u64 = std::env::var("WARDEN_SOAK_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    for seed in 1..=seeds {
        for nodes in ["3", "5"] {
            let report = dir.path().join(format!("soak-{seed}-{nodes}.json"));
            let (code, r) =
                run_demo(&["bank", "--nodes", nodes, "--duration", "60s", "--seed", &seed.to_string()], &report);
            eprintln!("soak seed {seed} on {nodes} nodes: exit {code}, faults {:?}", kinds(&r));
            assert_sound(code, &r);
            assert_bank(&r);
        }
    }
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
