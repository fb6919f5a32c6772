//! The observer's snapshot as Rust types: what a page draws, what `warden demo --observe`'s
//! launcher and `warden node --observe` publish, and what a demo node answers when asked for
//! its view. One type on both sides of every process boundary the page's data crosses, with
//! serde's derives; the embedded page reads these fields and no others (a unit test below
//! checks the page's script against a fully filled snapshot).
//!
//! [`supervisor_view`] fills a [`SupervisorView`] and its crash reports from a running
//! supervisor, so that any application can publish its own trees.

use serde::{Deserialize, Serialize};
use warden_core::{CrashReport, SupervisorRef};

/// The whole picture the page draws, published as one value.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ClusterSnapshot {
    /// The demo's name (`bank`, `pipeline`), absent outside a demo.
    pub demo: Option<String>,
    /// Whether the page shows fault buttons (only the demo launcher answers them).
    pub demo_mode: bool,
    /// Whether the cluster is ready (in a demo: every account placed).
    pub ready: bool,
    /// Time since the run started, in ms.
    pub elapsed_ms: u64,
    /// The workload's progress, in a demo.
    pub progress: Option<Progress>,
    /// Every node known, with its own view when it answered.
    pub nodes: Vec<NodeEntry>,
    /// Faults injected so far, oldest first.
    pub faults: Vec<FaultView>,
    /// What the fault buttons may hit, in a demo.
    pub targets: Option<Targets>,
}

/// A demo's workload so far.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Operations acknowledged.
    pub acknowledged: u64,
    /// Requests that failed.
    pub failed: u64,
}

/// A node process, as whoever publishes the snapshot knows it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Running and answering.
    Up,
    /// Running, but its heartbeats are late (a peer's view).
    Suspected,
    /// Considered gone by a peer.
    Down,
    /// Killed by a fault (a demo's launcher).
    Killed,
    /// Frozen by a fault (SIGSTOP).
    Stopped,
    /// Left the cluster.
    Left,
}

/// One node in the snapshot.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NodeEntry {
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: NodeState,
    /// Its address, when known.
    pub addr: Option<String>,
    /// Its own view, when it answered in time.
    pub observed: Option<NodeView>,
}

/// A node's own view: its peers, its group, its supervisors and what they recorded.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct NodeView {
    /// The node's name.
    pub node: String,
    /// Its peers, as its failure detector sees them.
    pub peers: Vec<PeerView>,
    /// Its consensus group, for a cluster node.
    pub group: Option<GroupView>,
    /// How many singletons it runs (its `supervisors` list at most the first few).
    pub hosted_total: usize,
    /// Its singletons' lease: time left, in ms, for a cluster node.
    pub lease_left_ms: Option<u64>,
    /// Its supervision trees.
    pub supervisors: Vec<SupervisorView>,
    /// Its latest crash reports.
    pub crash_reports: Vec<ReportView>,
    /// The checkpoints of what it runs.
    pub checkpoints: Vec<CheckpointView>,
}

/// How a node sees a peer.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Heartbeats arrive.
    Up,
    /// Heartbeats are late: phi is past the suspicion threshold.
    Suspected,
    /// Declared down.
    Down,
}

/// A peer in a node's view.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PeerView {
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: PeerState,
    /// Its phi-accrual suspicion level (absent once down).
    pub phi: Option<f64>,
    /// Time since its last heartbeat, in ms.
    pub silent_ms: u64,
}

/// A cluster node's consensus group, as that node sees it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupView {
    /// The leader's name, if known.
    pub leader: Option<String>,
    /// The voters' names.
    pub voters: Vec<String>,
    /// The learners' names.
    pub learners: Vec<String>,
    /// The term.
    pub term: u64,
    /// The last log index applied on this node.
    pub applied: u64,
}

/// A supervisor and its children.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SupervisorView {
    /// A name for the page (for example `singleton acct-3`).
    pub name: String,
    /// Its path.
    pub path: String,
    /// `running`, `stopping` or `stopped`.
    pub status: String,
    /// Figures over its whole subtree.
    pub stats: StatsView,
    /// Its children, in start order.
    pub children: Vec<ChildView>,
}

/// One child of a supervisor.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ChildView {
    /// Its id.
    pub id: String,
    /// Its path.
    pub path: String,
    /// `running`, `restarting`, `stopped`...: the child's status in lower case.
    pub status: String,
    /// `worker` or `supervisor`.
    pub child_type: String,
    /// Restarts by its supervisor.
    pub restarts: u64,
    /// Starts, restarts included.
    pub incarnation: u64,
    /// Its figures, once it has any.
    pub stats: Option<StatsView>,
    /// The kind of its latest failure among the reports shown (`panic`, `hung`...).
    pub last_failure: Option<String>,
}

/// Reliability figures at one instant (warden-core's `StatsSnapshot`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
pub struct StatsView {
    /// Failures so far.
    pub failures: u64,
    /// Failures within the last hour, per hour.
    pub failure_rate_per_hour: f64,
    /// Mean time between failures, in seconds (absent before the first failure).
    pub mtbf_s: Option<f64>,
    /// Mean time to repair, in seconds (absent before the first repair).
    pub mttr_s: Option<f64>,
    /// MTBF / (MTBF + MTTR); 1 with no failure yet.
    pub availability: f64,
}

impl From<warden_core::stats::StatsSnapshot> for StatsView {
    fn from(s: warden_core::stats::StatsSnapshot) -> Self {
        StatsView {
            failures: s.failures,
            failure_rate_per_hour: s.failure_rate_per_hour,
            mtbf_s: s.mtbf_s,
            mttr_s: s.mttr_s,
            availability: s.availability,
        }
    }
}

/// One crash report, as the page lists it (warden-core's `CrashReport`, its strings owned).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReportView {
    /// When the supervisor handled it, in ms since the Unix epoch.
    pub at_unix_ms: u64,
    /// The child's path.
    pub path: String,
    /// The paths of its supervisors, root first.
    pub ancestors: Vec<String>,
    /// The child's id.
    pub child_id: String,
    /// `panic`, `error`, `hung`, `killed`, `exit`, `start_failed`.
    pub reason_kind: String,
    /// The reason in words.
    pub reason: String,
    /// Where it panicked, for a panic.
    pub panic_location: Option<String>,
    /// The type of the message it was handling.
    pub message_type: Option<String>,
    /// The incarnation that failed.
    pub incarnation: u64,
    /// Restarts in the supervisor's intensity window, this one included, and the intensity.
    pub restarts_in_window: usize,
    /// Restarts allowed per period.
    pub intensity: u32,
    /// What the supervisor decided (`restart`, `restart after 250 ms`, `escalate`...).
    pub decision: String,
    /// The saved state the next incarnation resumed from (checkpointed children).
    pub restored: Option<RestoredView>,
}

/// Which saved state a restarted child resumed from (warden-core's `RestoredFrom`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoredView {
    /// The snapshot's sequence number (0: rebuilt from the journal alone).
    pub seq: u64,
    /// The snapshot's age when restored, in ms.
    pub age_ms: u64,
    /// Journal entries replayed on top of it.
    pub replayed: u64,
    /// Damaged snapshots skipped to get there.
    pub skipped: u32,
}

impl From<&CrashReport> for ReportView {
    fn from(r: &CrashReport) -> Self {
        ReportView {
            at_unix_ms: r.at_unix_ms,
            path: r.path.clone(),
            ancestors: r.ancestors.clone(),
            child_id: r.child_id.clone(),
            reason_kind: r.reason_kind.to_string(),
            reason: r.reason.clone(),
            panic_location: r.panic_location.clone(),
            message_type: r.message_type.map(str::to_string),
            incarnation: r.incarnation,
            restarts_in_window: r.restarts_in_window,
            intensity: r.intensity,
            decision: r.decision.to_string(),
            restored: r.restored.as_ref().map(|f| RestoredView {
                seq: f.seq,
                age_ms: f.age_ms,
                replayed: f.replayed,
                skipped: f.skipped,
            }),
        }
    }
}

/// The checkpoints kept for one key.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CheckpointView {
    /// The checkpoint key.
    pub key: String,
    /// The last sequence number written (snapshot or journal entry).
    pub last_seq: u64,
    /// How many snapshots are kept.
    pub kept: usize,
    /// The newest one's sequence number.
    pub snapshot_seq: Option<u64>,
    /// Its size in bytes.
    pub size_bytes: Option<u64>,
    /// Its age, in ms.
    pub age_ms: Option<u64>,
}

/// A fault injected in a demo, and when the cluster noticed and recovered.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FaultView {
    /// `panic`, `hang`, `kill`, `stop`, `restart`...
    pub kind: String,
    /// What was hit.
    pub target: String,
    /// When, in ms since the run started.
    pub injected_at_ms: u64,
    /// When it was detected.
    pub detected_at_ms: Option<u64>,
    /// When service was back.
    pub recovered_at_ms: Option<u64>,
}

/// What a demo's fault buttons may hit.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Targets {
    /// Actors (for `panic` and `hang`).
    pub actors: Vec<String>,
    /// Nodes (for `kill` and `stop`).
    pub nodes: Vec<String>,
}

/// `sup` as the page shows it, named `name`, with its newest `reports` crash reports at most
/// (oldest first). A child's `last_failure` is the kind of its newest failure among them.
/// A supervisor that does not answer shows no children (its status says why).
pub async fn supervisor_view(
    name: impl Into<String>,
    sup: &SupervisorRef,
    reports: usize,
) -> (SupervisorView, Vec<ReportView>) {
    let all = sup.crash_reports();
    let recent = &all[all.len().saturating_sub(reports)..];
    let path = sup.path().to_string();
    let children = sup
        .which_children()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let child_path = c.path.to_string();
            let last_failure = recent.iter().rev().find(|r| r.path == child_path).map(|r| r.reason_kind.to_string());
            ChildView {
                id: c.id,
                status: format!("{:?}", c.status).to_lowercase(),
                child_type: format!("{:?}", c.child_type).to_lowercase(),
                restarts: c.restarts,
                incarnation: c.incarnation,
                stats: sup.stats(&child_path).map(StatsView::from),
                last_failure,
                path: child_path,
            }
        })
        .collect();
    let view = SupervisorView {
        name: name.into(),
        status: format!("{:?}", sup.status()).to_lowercase(),
        stats: sup.subtree_stats(&path).into(),
        path,
        children,
    };
    (view, recent.iter().map(ReportView::from).collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A snapshot with every optional field present and every list holding one entry, so that
    /// its JSON names every field the types have.
    fn full() -> ClusterSnapshot {
        let stats = StatsView {
            failures: 1,
            failure_rate_per_hour: 2.0,
            mtbf_s: Some(3.0),
            mttr_s: Some(0.1),
            availability: 0.9,
        };
        let view = NodeView {
            node: "n1".into(),
            peers: vec![PeerView { name: "n2".into(), state: PeerState::Suspected, phi: Some(4.5), silent_ms: 900 }],
            group: Some(GroupView {
                leader: Some("n2".into()),
                voters: vec!["n1".into()],
                learners: vec!["n3".into()],
                term: 3,
                applied: 40,
            }),
            hosted_total: 1,
            lease_left_ms: Some(1200),
            supervisors: vec![SupervisorView {
                name: "singleton acct-1".into(),
                path: "/acct-1".into(),
                status: "running".into(),
                stats,
                children: vec![ChildView {
                    id: "acct-1".into(),
                    path: "/acct-1/acct-1".into(),
                    status: "running".into(),
                    child_type: "worker".into(),
                    restarts: 1,
                    incarnation: 2,
                    stats: Some(stats),
                    last_failure: Some("panic".into()),
                }],
            }],
            crash_reports: vec![ReportView {
                at_unix_ms: 1,
                path: "/acct-1/acct-1".into(),
                ancestors: vec!["/acct-1".into()],
                child_id: "acct-1".into(),
                reason_kind: "panic".into(),
                reason: "boom".into(),
                panic_location: Some("src/lib.rs:1:1".into()),
                message_type: Some("Msg".into()),
                incarnation: 1,
                restarts_in_window: 1,
                intensity: 3,
                decision: "restart".into(),
                restored: Some(RestoredView { seq: 3, age_ms: 40, replayed: 2, skipped: 0 }),
            }],
            checkpoints: vec![CheckpointView {
                key: "acct-1".into(),
                last_seq: 9,
                kept: 2,
                snapshot_seq: Some(7),
                size_bytes: Some(100),
                age_ms: Some(5),
            }],
        };
        ClusterSnapshot {
            demo: Some("bank".into()),
            demo_mode: true,
            ready: true,
            elapsed_ms: 10,
            progress: Some(Progress { acknowledged: 5, failed: 1 }),
            nodes: vec![NodeEntry {
                name: "n1".into(),
                state: NodeState::Up,
                addr: Some("127.0.0.1:1".into()),
                observed: Some(view),
            }],
            faults: vec![FaultView {
                kind: "kill".into(),
                target: "n2".into(),
                injected_at_ms: 1,
                detected_at_ms: Some(2),
                recovered_at_ms: Some(3),
            }],
            targets: Some(Targets { actors: vec!["acct-1".into()], nodes: vec!["n2".into()] }),
        }
    }

    fn keys(v: &serde_json::Value, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    out.insert(k.clone());
                    keys(v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
            _ => {}
        }
    }

    /// The script's property reads, `x.name` (not method calls `x.name(`).
    fn page_reads() -> BTreeSet<String> {
        let script = crate::web::PAGE.split("<script>").nth(1).and_then(|s| s.split("</script>").next()).unwrap_or("");
        let bytes = script.as_bytes();
        let mut out = BTreeSet::new();
        let mut i = 0;
        while i < bytes.len() {
            let after_name =
                i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || matches!(bytes[i - 1], b'_' | b')' | b']'));
            if bytes[i] == b'.' && after_name {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                    end += 1;
                }
                if end > start && bytes.get(end) != Some(&b'(') && !bytes[start].is_ascii_digit() {
                    out.insert(script[start..end].to_string());
                }
                i = end;
            } else {
                i += 1;
            }
        }
        out
    }

    /// Properties the script reads from the browser's own objects (DOM, events, responses)
    /// or from its own values (`r` of its (node, report) pairs), not from a snapshot.
    const BROWSER_NAMES: [&str; 16] = [
        "length",
        "textContent",
        "style",
        "display",
        "dataset",
        "innerHTML",
        "classList",
        "timer",
        "ok",
        "error",
        "data",
        "onerror",
        "key",
        "snapshots",
        "body",
        "r",
    ];

    /// Fields the page does not draw, each with the reason.
    const NOT_DRAWN: [(&str, &str); 1] =
        [("node", "a node's view names the node that answered; the page draws the entry's name")];

    #[test]
    fn the_page_reads_only_fields_the_snapshot_has_and_draws_every_other() {
        let mut fields = BTreeSet::new();
        keys(&serde_json::to_value(full()).expect("a snapshot serialises"), &mut fields);
        let reads = page_reads();
        let unknown: Vec<&String> =
            reads.iter().filter(|r| !fields.contains(*r) && !BROWSER_NAMES.contains(&r.as_str())).collect();
        assert!(unknown.is_empty(), "the page reads fields no snapshot has: {unknown:?}");
        let undrawn: Vec<&String> =
            fields.iter().filter(|f| !reads.contains(*f) && !NOT_DRAWN.iter().any(|(n, _)| n == f)).collect();
        assert!(undrawn.is_empty(), "snapshot fields the page never reads: {undrawn:?}");
        for (name, _) in NOT_DRAWN {
            assert!(fields.contains(name), "NOT_DRAWN names {name}, which no snapshot has");
        }
    }

    #[test]
    fn a_snapshot_goes_through_json_unchanged() {
        let s = full();
        let text = serde_json::to_string(&s).expect("serialises");
        let back: ClusterSnapshot = serde_json::from_str(&text).expect("deserialises");
        assert_eq!(back, s);
        assert!(text.contains(r#""state":"suspected""#), "states are snake_case words: {text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_view_lists_only_the_newest_reports_it_is_allowed() {
        use std::time::{Duration, Instant};
        use warden_core::{ChildSpec, Supervisor, SupervisorSpec};
        #[derive(Clone)]
        struct Crashy;
        impl ractor::Actor for Crashy {
            type Msg = u32;
            type State = ();
            type Arguments = ();
            async fn pre_start(&self, _: ractor::ActorRef<u32>, _: ()) -> Result<(), ractor::ActorProcessingErr> {
                Ok(())
            }
            async fn handle(
                &self,
                _: ractor::ActorRef<u32>,
                n: u32,
                _: &mut (),
            ) -> Result<(), ractor::ActorProcessingErr> {
                Err(format!("crash number {n}").into())
            }
        }
        const CRASHES: u32 = 8;
        const ALLOWED: usize = 5;
        let spec = ChildSpec::worker("crashy", Crashy, ());
        let child = spec.handle();
        let tree = SupervisorSpec::one_for_one().intensity(100, Duration::from_secs(60)).child(spec);
        let sup = Supervisor::start("observe-snapshot-bound", tree).await.expect("the tree starts");
        for n in 0..CRASHES {
            child.cast(n).expect("the child takes the message");
            let by = Instant::now() + Duration::from_secs(30);
            while sup.crash_reports().len() <= n as usize {
                assert!(Instant::now() < by, "crash {n} not reported within 30 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let (view, reports) = supervisor_view("app", &sup, ALLOWED).await;
        assert_eq!(reports.len(), ALLOWED, "only the newest {ALLOWED} of {CRASHES} reports");
        for (report, n) in reports.iter().zip(CRASHES - ALLOWED as u32..) {
            assert!(report.reason.contains(&format!("crash number {n}")), "oldest first: {}", report.reason);
        }
        assert_eq!(view.children[0].restarts, u64::from(CRASHES), "the view still counts every restart");
        sup.shutdown().await;
    }

    #[tokio::test]
    async fn a_running_supervisor_is_described_with_its_children_and_reports() {
        use warden_core::{ChildSpec, Supervisor, SupervisorSpec};
        #[derive(Clone)]
        struct Idle;
        impl ractor::Actor for Idle {
            type Msg = ();
            type State = ();
            type Arguments = ();
            async fn pre_start(&self, _: ractor::ActorRef<()>, _: ()) -> Result<(), ractor::ActorProcessingErr> {
                Ok(())
            }
        }
        let spec = SupervisorSpec::one_for_one().child(ChildSpec::worker("idle", Idle, ()));
        let sup = Supervisor::start("observe-snapshot-sup", spec).await.expect("the tree starts");
        let (view, reports) = supervisor_view("app", &sup, 10).await;
        assert_eq!(view.name, "app");
        assert_eq!(view.status, "running");
        assert_eq!(view.children.len(), 1);
        assert_eq!(view.children[0].id, "idle");
        assert_eq!(view.children[0].status, "running");
        assert_eq!(view.children[0].child_type, "worker");
        assert!(reports.is_empty());
        sup.shutdown().await;
    }
}
