//! The bench binary takes every figure and prints the documented JSON shape.

use std::process::Command;

#[test]
fn every_figure_is_measured_for_warden_and_its_peers() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_warden-bench")).args(["--smoke", "--json"]).output().expect("bench runs");
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    let peers_of = |fig: &str| -> Vec<String> {
        let obj = json[fig].as_object().unwrap_or_else(|| panic!("figure {fig} missing in {json}"));
        // Every figure is a positive measurement, except counts of bad things, which may be 0.
        let may_be_zero = fig == "pool_lost_requests";
        assert!(
            obj.values().all(|v| v.as_f64().is_some_and(|x| x.is_finite() && (x > 0.0 || (may_be_zero && x == 0.0)))),
            "{fig}: {obj:?}"
        );
        obj.keys().cloned().collect()
    };
    let all = ["kameo", "ractor", "ractor_supervisor", "warden"];
    assert_eq!(peers_of("restart_one_for_one_p50_us"), all);
    assert_eq!(peers_of("restart_one_for_one_p99_us"), all);
    assert_eq!(peers_of("restart_floor_p50_us"), ["ractor"]);
    assert_eq!(peers_of("restart_floor_p99_us"), ["ractor"]);
    assert_eq!(peers_of("restart_floor_round_trip_p50_us"), ["ractor"]);
    assert_eq!(peers_of("restart_floor_round_trip_p99_us"), ["ractor"]);
    assert_eq!(peers_of("spawn_child_us"), all);
    assert_eq!(peers_of("spawn_floor_us"), ["ractor"]);
    assert_eq!(peers_of("memory_per_child_bytes"), all);
    assert_eq!(peers_of("one_for_all_1000_ms"), ["kameo", "ractor_supervisor", "warden"]);
    assert_eq!(peers_of("supervised_cast_ratio"), ["warden"]);
    assert_eq!(peers_of("heartbeat_cast_ratio"), ["warden"]);
    assert_eq!(peers_of("hang_detection_ratio_p99"), ["warden"]);
    assert_eq!(peers_of("snapshot_commit_p50_us"), ["fsync", "redb", "warden"]);
    assert_eq!(peers_of("snapshot_commit_fsync_ratio"), ["warden"]);
    assert_eq!(peers_of("snapshot_commit_redb_ratio"), ["warden"]);
    assert_eq!(peers_of("group_commit_per_s"), ["warden"]);
    assert_eq!(peers_of("restore_1mib_p99_ms"), ["warden"]);
    assert_eq!(peers_of("checkpoint_cast_ratio"), ["warden"]);
    assert_eq!(peers_of("pool_requests_per_s"), ["ractor_factory", "warden"]);
    assert_eq!(peers_of("pool_throughput_ratio"), ["warden"]);
    assert_eq!(peers_of("pool_failover_p99_us"), ["no_crashes", "warden"]);
    assert_eq!(peers_of("pool_failover_max_us"), ["no_crashes", "warden"]);
    assert_eq!(peers_of("pool_lost_requests"), ["warden"]);
    assert_eq!(peers_of("dynamic_restart_p50_us_100k"), ["warden", "warden_100"]);
    assert_eq!(peers_of("dynamic_exit_us_100k"), ["warden", "warden_100"]);
    assert_eq!(peers_of("restart_p50_reports_on_us"), ["warden"]);
    assert_eq!(peers_of("restart_p50_reports_off_us"), ["warden"]);
    assert_eq!(peers_of("restart_reports_overhead"), ["warden"]);
    assert_eq!(json["pool_lost_requests"]["warden"].as_f64(), Some(0.0), "no request is ever lost");
}
