//! The machine-readable report of a demo run, and the figures it is made of.

use std::collections::BTreeMap;

use serde::Serialize;

use super::bank::{AuditorStatus, Transfer};

/// p50 / p99 / max of a set of measurements in ms (all zero when empty), from an HDR
/// histogram of microseconds with 3 significant digits (hdrhistogram): a percentile is the
/// recorded value at that rank, within 0.1%.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// How many measurements.
    pub n: usize,
}

impl Spread {
    /// The spread of `values`.
    pub fn of(values: &[f64]) -> Spread {
        if values.is_empty() {
            return Spread::default();
        }
        // 1 µs to an hour; longer values count as an hour.
        let Ok(mut h) = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3) else {
            return Spread::default();
        };
        for v in values {
            // Negative or non-finite values cannot be measurements: they count as 0.
            let micros = if v.is_finite() && *v > 0.0 { (v * 1000.0).round() as u64 } else { 0 };
            h.saturating_record(micros);
        }
        // The lowest value of the percentile's bucket: exact for values with at most 3 digits.
        let ms = |micros: u64| h.lowest_equivalent(micros) as f64 / 1000.0;
        Spread {
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            n: values.len(),
        }
    }
}

/// One injected fault, as the report lists it (times in ms from the start of the workload).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FaultRecord {
    /// `panic`, `hang`, `kill`, `stop`, `restart`.
    pub kind: String,
    /// What was hit (a node or an actor; `@` targets resolved).
    pub target: String,
    /// When it was injected.
    pub injected_at_ms: u64,
    /// When the cluster noticed (crash report, hang report, node down, node back up).
    pub detected_at_ms: Option<u64>,
    /// When service was back (actor restarted; singletons of a lost node running elsewhere and
    /// requests succeeding again; a restarted node seen up by every other node).
    pub recovered_at_ms: Option<u64>,
    /// For a lost node that hosted the demo's key singleton (the auditor, the results
    /// recorder): injection until that singleton answered from another node with its state
    /// (its counter at least where it was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub singleton_back_ms: Option<u64>,
    /// For a stopped node: when, after SIGCONT, another node reported it up again (it rejoined
    /// with a new session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejoined_at_ms: Option<u64>,
    /// For a fault on a node: whether that node was the Raft leader (as last reported) when
    /// the fault was injected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was_leader: Option<bool>,
    /// Singletons the fault displaced, with the node each came back on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<String>,
    /// Anything worth knowing (e.g. a redirected target).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// The report of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `bank` or `pipeline`.
    pub demo: String,
    /// Node processes.
    pub nodes: usize,
    /// The plan's seed.
    pub seed: u64,
    /// The workload's length, seconds.
    pub duration_s: f64,
    /// Faults injected.
    pub faults_injected: usize,
    /// Faults the cluster detected.
    pub faults_detected: usize,
    /// Faults the cluster recovered from.
    pub faults_recovered: usize,
    /// Injection to detection.
    pub detection_latency_ms: Spread,
    /// Injection to recovery.
    pub recovery_time_ms: Spread,
    /// Mean time between the detected failures, seconds.
    pub mtbf_s: Option<f64>,
    /// Mean time to recover, ms.
    pub mttr_ms: Option<f64>,
    /// Share of 250 ms windows of the workload in which at least one request succeeded.
    pub availability: f64,
    /// Requests acknowledged (bank: transfers; pipeline: jobs completed or reported failed).
    pub acknowledged_ops: u64,
    /// Acknowledged requests whose effect was missing at the end.
    pub lost_acknowledged_ops: u64,
    /// Requests that failed or timed out (not acknowledged: their outcome was unknown to the
    /// client, and the invariant holds either way).
    pub failed_requests: u64,
    /// Suspicions or downs of nodes no fault had hit.
    pub false_suspicions: u64,
    /// The invariant, in words.
    pub invariant: String,
    /// Whether it held.
    pub invariant_ok: bool,
    /// Every fault.
    pub faults: Vec<FaultRecord>,
    /// How the nodes were connected (loopback, or network namespaces for partitions).
    pub network: String,
    /// The checker's verdict over the stores and the history.
    pub checker: Option<super::checker::Verdict>,
    /// Demo-specific figures (money counted, jobs, the auditor's state, ...).
    pub details: Details,
}

/// Demo-specific figures of a run, beside the common ones.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Details {
    /// Why the final check could not read the demo's state, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The bank's books (bank demo).
    #[serde(flatten)]
    pub bank: Option<BankDetails>,
    /// The pipeline's jobs (pipeline demo).
    #[serde(flatten)]
    pub pipeline: Option<PipelineDetails>,
    /// How many times the final census was taken until it showed every singleton once (or
    /// its wait ran out).
    pub singleton_censuses: u32,
    /// The key singleton's probe.
    pub key_singleton: KeySingletonDetails,
    /// From a node fault until the singletons it displaced ran elsewhere, ms.
    pub singleton_failover_ms: Spread,
    /// Whether the last census found every singleton on exactly one node.
    pub singletons_exactly_once: bool,
    /// The singletons the last census did not find on exactly one node, and where it found them.
    pub singleton_hosts: BTreeMap<String, Vec<String>>,
    /// Crash reports the nodes printed.
    pub crashes_reported: u64,
    /// The launcher's log of the run (its last `LOG_LINES` lines).
    pub log: Vec<String>,
    /// The nodes' last warnings and errors (`launcher::process::NODE_WARNINGS` lines), when
    /// their logs were not shown (`--node-logs`).
    pub node_warnings: Vec<String>,
}

/// The bank's books at the end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BankDetails {
    /// Accounts read.
    pub accounts: usize,
    /// The money the bank started with.
    pub expected_total: i64,
    /// The money the auditor counted.
    pub counted_total: i64,
    /// Debits whose credit had not landed when counted.
    pub credits_in_flight: i64,
    /// Transfers acknowledged to the workload.
    pub transfers_acknowledged: usize,
    /// The auditor's state, if it answered.
    pub auditor: Option<AuditorStatus>,
    /// Acknowledged transfers whose debit or credit is missing (the first 20).
    pub lost_transfers: Vec<LostTransfer>,
}

/// An acknowledged transfer missing from the books.
#[derive(Debug, Clone, Serialize)]
pub struct LostTransfer {
    /// The transfer.
    pub transfer: Transfer,
    /// Whether its source account holds the debit.
    pub debited: bool,
    /// Whether its destination account holds the credit.
    pub credited: bool,
}

/// The pipeline's jobs at the end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineDetails {
    /// Jobs handed to the cluster.
    pub jobs_accepted: usize,
    /// Jobs the results singleton recorded.
    pub jobs_completed: u64,
    /// Jobs reported failed.
    pub jobs_failed: u64,
    /// Jobs with no outcome known.
    pub jobs_without_outcome: u64,
    /// Duplicate completions the results singleton suppressed.
    pub duplicates_suppressed: u64,
    /// Job ids recorded that the workload never submitted.
    pub recorded_but_never_submitted: usize,
}

/// What the key singleton's probe saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KeySingletonDetails {
    /// Its name.
    pub name: String,
    /// Probes it answered.
    pub probes_answered: u64,
    /// The highest counter it answered.
    pub highest_counter: u64,
    /// How many times its counter went back (state lost in a move).
    pub counter_went_back: u64,
    /// The nodes it answered from.
    pub answered_from: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_print_each_demos_figures_at_the_top_of_details() {
        let bank = Details {
            bank: Some(BankDetails {
                accounts: 3,
                expected_total: 300,
                counted_total: 300,
                credits_in_flight: 0,
                transfers_acknowledged: 7,
                auditor: None,
                lost_transfers: Vec::new(),
            }),
            ..Details::default()
        };
        let v = serde_json::to_value(&bank).expect("details serialise");
        assert_eq!(v["counted_total"], 300, "{v}");
        assert_eq!(v["auditor"], serde_json::Value::Null, "{v}");
        assert!(v.get("error").is_none() && v.get("jobs_completed").is_none(), "{v}");
        assert_eq!(v["key_singleton"]["counter_went_back"], 0, "{v}");
        let failed = Details { error: Some("unread".into()), ..Details::default() };
        let v = serde_json::to_value(&failed).expect("details serialise");
        assert_eq!(v["error"], "unread", "{v}");
        assert!(v.get("counted_total").is_none(), "{v}");
    }

    #[test]
    fn spread_takes_percentiles_within_a_tenth_of_a_percent() {
        let s = Spread::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((s.p50, s.p99, s.max, s.n), (3.0, 5.0, 5.0, 5));
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        let p99 = Spread::of(&v).p99;
        assert!((p99 - 198.0).abs() / 198.0 < 0.001, "{p99}");
        let big = Spread::of(&[1_234.5, 98_765.4]);
        assert!((big.max - 98_765.4).abs() / 98_765.4 < 0.001, "{big:?}");
        assert_eq!(Spread::of(&[]), Spread::default());
        assert_eq!(Spread::of(&[-1.0, f64::NAN]).max, 0.0);
    }
}
