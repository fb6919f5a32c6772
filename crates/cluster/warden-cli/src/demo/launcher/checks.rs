//! The end of a run: the cluster brought back to quiet (partitions healed, stopped nodes
//! resumed, killed ones restarted, every singleton running once), the demo's invariant checked
//! through the nodes, the nodes stopped, the checker run over their stores, and the report.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::world::Proc;
use super::{faults, good_windows, Launcher};
use crate::demo::bank::{Book, INITIAL_BALANCE};
use crate::demo::checker;
use crate::demo::pipeline::JobOutcome;
use crate::demo::plan::{Action, Fault};
use crate::demo::protocol::{Answer, Op, Status};
use crate::demo::report::{BankDetails, KeySingletonDetails, LostTransfer, PipelineDetails, Report, Spread};
use crate::demo::{Demo, RunSettings};

/// How long the cluster may take to place every singleton (at the start, and again at the end).
pub const PLACE_WAIT: Duration = Duration::from_secs(120);
/// How long the end waits for credits in flight to be delivered.
pub const QUIET_WAIT: Duration = Duration::from_secs(60);
/// How long the end takes the census of singletons again until it shows each on one node.
pub const CENSUS_WAIT: Duration = Duration::from_secs(10);

/// Waits until every node in `names` reported ready.
pub async fn wait_ready(l: &Arc<Launcher>, names: &[String], interrupted: &AtomicBool) -> anyhow::Result<()> {
    let by = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = { names.iter().all(|n| l.world().nodes.get(n).is_some_and(|i| i.id.is_some())) };
        if ready {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < by, "the nodes {names:?} were not all ready within 60 s");
        anyhow::ensure!(!interrupted.load(Ordering::Relaxed), "interrupted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every singleton of the demo runs on exactly one node.
pub async fn wait_placed(l: &Arc<Launcher>, within: Duration, interrupted: &AtomicBool) -> anyhow::Result<()> {
    let expected = l.demo.singletons(l.settings.accounts);
    let by = Instant::now() + within;
    loop {
        let placed = {
            let w = l.world();
            expected.iter().all(|s| w.hosts.get(s).is_some_and(|h| h.len() == 1))
        };
        if placed {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < by, "the cluster did not place its singletons within {within:?}");
        anyhow::ensure!(!interrupted.load(Ordering::Relaxed), "interrupted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One progress line on stderr.
pub fn progress(l: &Arc<Launcher>, tty: bool) {
    let w = l.world();
    let states: Vec<String> = w
        .nodes
        .iter()
        .map(|(n, i)| match i.proc {
            Proc::Up if i.serving => n.clone(),
            Proc::Up => format!("{n}(not serving)"),
            Proc::Killed => format!("{n}(killed)"),
            Proc::Stopped => format!("{n}(stopped)"),
            Proc::Left => format!("{n}(left)"),
        })
        .collect();
    let line = format!(
        "{:>6.1}s  acked {:>7}  failed {:>5}  faults {}/{}  nodes {}",
        l.workload_now() as f64 / 1000.0,
        l.acked.load(Ordering::Relaxed),
        l.failed.load(Ordering::Relaxed),
        w.faults.iter().filter(|f| f.rec.recovered_at_ms.is_some()).count(),
        w.faults.len(),
        states.join(" ")
    );
    drop(w);
    if tty {
        eprint!("\r{line:<110}");
    } else {
        eprintln!("{line}");
    }
}

/// Ends every fault still in effect: heals partitions, resumes stopped nodes, restarts killed
/// ones.
async fn quiesce(l: &Arc<Launcher>, base: &Path) {
    if l.world().cut.is_some() {
        faults::inject(l, &Fault { at: Duration::ZERO, action: Action::Heal }, base).await;
    }
    let nodes: Vec<(String, Proc)> = l.world().nodes.iter().map(|(n, i)| (n.clone(), i.proc)).collect();
    for (name, proc) in nodes {
        match proc {
            Proc::Stopped => faults::resume(l, &name),
            Proc::Killed => {
                l.note(format!("restarting {name} for the final check"));
                if let Err(e) = l.spawn(&name) {
                    l.note(format!("restarting {name}: {e:#}"));
                }
            }
            Proc::Up | Proc::Left => {}
        }
    }
}

/// The end of the run and the report (before the stores are checked).
pub async fn finish(
    l: &Arc<Launcher>,
    settings: &RunSettings,
    workload_ms: u64,
    base: &Path,
) -> anyhow::Result<Report> {
    quiesce(l, base).await;
    let never = AtomicBool::new(false);
    if let Err(e) = wait_placed(l, PLACE_WAIT, &never).await {
        l.note(format!("at the end: {e}"));
    }
    // Let faults whose recovery is judged by the next success see one.
    for _ in 0..40 {
        if l.world().faults.iter().all(|f| f.rec.recovered_at_ms.is_some() || f.rec.detected_at_ms.is_none()) {
            break;
        }
        if let Some(node) = l.up_nodes().first().cloned() {
            if matches!(l.request(&node, Op::Status, Duration::from_secs(2)).await, Some(Answer::Status(_))) {
                l.success();
            }
        }
        let last = l.last_success.load(Ordering::Relaxed);
        l.world().settle(l.workload_now(), (last > 0).then_some(last));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut report = Report {
        demo: settings.demo.name().to_string(),
        nodes: settings.nodes,
        seed: settings.seed,
        duration_s: (workload_ms as f64 / 100.0).round() / 10.0,
        acknowledged_ops: l.acked.load(Ordering::Relaxed),
        failed_requests: l.failed.load(Ordering::Relaxed),
        network: l.net_description.clone(),
        ..Report::default()
    };
    match settings.demo {
        Demo::Bank => check_bank(l, settings, &mut report).await,
        Demo::Pipeline => check_pipeline(l, &mut report).await,
    }
    // Each singleton on exactly one node. The census asks each node in turn, so a handoff that
    // is still settling (the rebalancing after the last fault) can be seen half done: it is
    // taken again, for at most CENSUS_WAIT, until it shows every singleton once.
    let expected = settings.demo.singletons(settings.accounts);
    let census_by = Instant::now() + CENSUS_WAIT;
    let mut censuses = 0u32;
    let (hosted, singletons_ok) = loop {
        censuses += 1;
        let mut hosted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for node in l.up_nodes() {
            if let Some(Answer::Hosted { names }) = l.request(&node, Op::Hosted, Duration::from_secs(5)).await {
                for s in names {
                    hosted.entry(s).or_default().push(node.clone());
                }
            }
        }
        let ok = expected.iter().all(|s| hosted.get(s).is_some_and(|h| h.len() == 1));
        if ok || Instant::now() >= census_by {
            break (hosted, ok);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    report.details.singleton_censuses = censuses;
    if !singletons_ok {
        report.invariant_ok = false;
        report.invariant.push_str(" Every singleton runs on exactly one node.");
    }
    let h = l.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if h.probe_regressions > 0 {
        report.invariant_ok = false;
        report.invariant.push_str(" The key singleton keeps its state when it moves.");
    }
    report.details.key_singleton = KeySingletonDetails {
        name: settings.demo.key_singleton().to_string(),
        probes_answered: h.probe_samples,
        highest_counter: h.probe_max,
        counter_went_back: h.probe_regressions,
        answered_from: h.probe_hosts.clone(),
    };
    drop(h);
    let w = l.world();
    let back: Vec<f64> = w.faults.iter().filter_map(|f| f.rec.singleton_back_ms.map(|v| v as f64)).collect();
    report.details.singleton_failover_ms = Spread::of(&back);
    report.details.singletons_exactly_once = singletons_ok;
    report.details.singleton_hosts = hosted.into_iter().filter(|(_, h)| h.len() != 1).collect();
    report.details.crashes_reported = w.crashes;
    report.details.log = w.log.iter().cloned().collect();
    report.details.node_warnings = l.spawner.warnings.lines();
    report.faults = w.faults.iter().map(|f| f.rec.clone()).collect();
    report.false_suspicions = w.false_suspicions;
    drop(w);
    report.faults_injected = report.faults.len();
    report.faults_detected = report.faults.iter().filter(|f| f.detected_at_ms.is_some()).count();
    report.faults_recovered = report.faults.iter().filter(|f| f.recovered_at_ms.is_some()).count();
    let det: Vec<f64> = report
        .faults
        .iter()
        .filter_map(|f| f.detected_at_ms.map(|d| d.saturating_sub(f.injected_at_ms) as f64))
        .collect();
    let rec: Vec<f64> = report
        .faults
        .iter()
        .filter_map(|f| f.recovered_at_ms.map(|r| r.saturating_sub(f.injected_at_ms) as f64))
        .collect();
    report.detection_latency_ms = Spread::of(&det);
    report.recovery_time_ms = Spread::of(&rec);
    report.mtbf_s = (report.faults_detected > 0).then(|| workload_ms as f64 / 1000.0 / report.faults_detected as f64);
    report.mttr_ms = (!rec.is_empty()).then(|| rec.iter().sum::<f64>() / rec.len() as f64);
    let windows = (workload_ms / 250).max(1);
    let good = good_windows(l).iter().filter(|x| **x < windows).count() as u64;
    report.availability = ((good as f64 / windows as f64) * 10_000.0).round() / 10_000.0;
    Ok(report)
}

async fn check_bank(l: &Arc<Launcher>, settings: &RunSettings, report: &mut Report) {
    let expected_total = INITIAL_BALANCE * settings.accounts as i64;
    report.invariant = format!(
        "Total money is constant ({expected_total} over {} accounts, counted with credits in flight) and every acknowledged transfer is debited at its source and credited at its destination after all faults.",
        settings.accounts
    );
    // Wait until no credit is in flight, then count.
    let by = Instant::now() + QUIET_WAIT;
    let mut last = None;
    while Instant::now() < by {
        let Some(node) = l.up_nodes().first().cloned() else { break };
        if let Some(Answer::Books { audit, books }) = l.request(&node, Op::Books, Duration::from_secs(10)).await {
            let quiet = audit.outbox_entries == 0;
            last = Some((audit, books));
            if quiet {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let Some((audit, books)) = last else {
        report.invariant_ok = false;
        report.details.error = Some("the accounts could not be read at the end".into());
        return;
    };
    let by_name: HashMap<&str, &Book> = books.iter().map(|b| (b.name.as_str(), b)).collect();
    let (missing, transfers) = {
        let h = l.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut missing = Vec::new();
        for t in &h.transfers {
            let debited = by_name.get(t.from.as_str()).is_some_and(|b| b.debited.contains(&t.id));
            let credited = by_name.get(t.to.as_str()).is_some_and(|b| b.credited.contains(&t.id));
            if !(debited && credited) {
                missing.push(LostTransfer { transfer: t.clone(), debited, credited });
            }
        }
        report.lost_acknowledged_ops = missing.len() as u64;
        report.invariant_ok = books.len() == settings.accounts
            && audit.total == expected_total
            && audit.in_flight == 0
            && missing.is_empty();
        (missing, h.transfers.len())
    };
    let auditor = match l.up_nodes().first() {
        Some(node) => match l.request(node, Op::Status, Duration::from_secs(5)).await {
            Some(Answer::Status(Status::Bank(s))) => Some(s),
            _ => None,
        },
        None => None,
    };
    *l.served_books.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = books.clone();
    report.details.bank = Some(BankDetails {
        accounts: books.len(),
        expected_total,
        counted_total: audit.total,
        credits_in_flight: audit.in_flight,
        transfers_acknowledged: transfers,
        auditor,
        lost_transfers: missing.into_iter().take(20).collect(),
    });
}

async fn check_pipeline(l: &Arc<Launcher>, report: &mut Report) {
    report.invariant = "Every accepted job is completed exactly once (recorded once in the results singleton) or reported failed; none is lost.".into();
    let mut summary = None;
    for _ in 0..20 {
        if let Some(node) = l.up_nodes().first().cloned() {
            if let Some(Answer::Status(Status::Pipeline { completed, duplicates, .. })) =
                l.request(&node, Op::Status, Duration::from_secs(5)).await
            {
                summary = Some((completed, duplicates));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let Some((completed, duplicates)) = summary else {
        report.invariant_ok = false;
        report.details.error = Some("the results singleton could not be read at the end".into());
        return;
    };
    let completed: HashSet<u64> = completed.into_iter().collect();
    let h = l.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (mut done, mut failed, mut lost, mut unknown) = (0u64, 0u64, 0u64, 0u64);
    for (id, outcome) in &h.jobs {
        match outcome {
            _ if completed.contains(id) => done += 1,
            Some(JobOutcome::Failed { .. }) => failed += 1,
            Some(_) => lost += 1, // answered "completed" but not recorded
            None => unknown += 1,
        }
    }
    let strangers = completed.iter().filter(|id| !h.jobs.contains_key(id)).count();
    report.lost_acknowledged_ops = lost + unknown;
    report.invariant_ok = lost == 0 && unknown == 0 && strangers == 0;
    report.details.pipeline = Some(PipelineDetails {
        jobs_accepted: h.jobs.len(),
        jobs_completed: done,
        jobs_failed: failed,
        jobs_without_outcome: unknown,
        duplicates_suppressed: duplicates,
        recorded_but_never_submitted: strangers,
    });
}

/// Stops every node: closes their stdin (they stop in order), then SIGTERM, SIGKILL after 10 s.
pub async fn stop_all(l: &Arc<Launcher>) {
    let names: Vec<String> = l.slots().keys().cloned().collect();
    let mut procs = Vec::new();
    for name in names {
        faults::resume(l, &name);
        if let Some(running) = l.take_process(&name) {
            procs.push(running);
        }
    }
    for p in &mut procs {
        let (tx, _) = tokio::sync::mpsc::channel::<String>(1);
        p.stdin = tx; // dropping the old sender closes the node's stdin
    }
    for mut p in procs {
        if tokio::time::timeout(Duration::from_secs(10), p.child.wait()).await.is_err() {
            super::process::signal(p.pid, nix::sys::signal::Signal::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(5), p.child.wait()).await.is_err() {
                let _ = p.child.start_kill();
                let _ = p.child.wait().await;
            }
        }
    }
}

/// Runs the checker over every node's store and the workload's history; its verdict goes in
/// the report, and a violation breaks the invariant.
pub fn check_stores(l: &Arc<Launcher>, base: &Path, report: &mut Report) {
    let dirs: Vec<(String, std::path::PathBuf)> = l
        .slots()
        .iter()
        .filter(|(name, _)| l.world().nodes.get(*name).is_some_and(|n| n.proc != Proc::Left))
        .map(|(name, slot)| (name.clone(), slot.data_dir.clone()))
        .collect();
    let _ = base;
    let h = l.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let books = l.served_books.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let verdict = checker::check(l.demo, &dirs, &h, &books);
    if !verdict.ok {
        report.invariant_ok = false;
        report.invariant.push_str(" The checker finds no violation in the stores and the history.");
    }
    report.checker = Some(verdict);
}
