//! warden-bench: warden measured next to bare ractor, ractor-supervisor and kameo, in one run.
//!
//! Prints a table of figures with each peer's value and warden's ratio to the best peer, or,
//! with `--json`, one JSON object whose keys are figure names and whose values map each
//! framework measured to its number. `--quick` keeps a run under two minutes. Methods follow
//! `../shared/context/performance.md`; results and the command go in `docs/benchmarks.md`.

mod checkpoint;
mod dynamic;
mod pool;
mod restart;
mod spawn;
mod stats;
mod subjects;

use std::collections::BTreeMap;

use clap::Parser;
use spawn::Subject;
use stats::{median, spread};

#[derive(Parser, Debug)]
#[command(about = "warden next to bare ractor, ractor-supervisor and kameo")]
struct Cli {
    /// Fewer repetitions: the whole run stays under two minutes.
    #[arg(long)]
    quick: bool,
    /// Internal: a tiny run that checks every figure can be taken (used by the tests).
    #[arg(long, hide = true)]
    smoke: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Measure only figures whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Internal: measure memory per child for one framework in this process and print it.
    #[arg(long, hide = true, value_enum)]
    memory_probe: Option<Subject>,
    /// Internal: children for --memory-probe.
    #[arg(long, hide = true, default_value_t = 100_000)]
    children: usize,
}

/// figure name -> framework -> value
type Figures = BTreeMap<&'static str, BTreeMap<&'static str, f64>>;

fn name(s: Subject) -> &'static str {
    match s {
        Subject::Warden => "warden",
        Subject::Ractor => "ractor",
        Subject::RactorSupervisor => "ractor_supervisor",
        Subject::Kameo => "kameo",
    }
}

#[derive(Clone, Copy)]
struct Plan {
    restart_iterations: usize,
    reps: usize,
    group_children: usize,
    spawn_n: usize,
    memory_children: usize,
    cast_n: usize,
    hangs: usize,
    commits: usize,
    group_actors: usize,
    group_run: std::time::Duration,
    restores: usize,
    pool_n: usize,
    pool_run: std::time::Duration,
    /// Children of the large dynamic supervisor, restarts and exits timed in it.
    dynamic_children: usize,
    dynamic_ops: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Injected panics are the workload, not news: silence them so printing is not measured.
    std::panic::set_hook(Box::new(|_| {}));
    let rt = Rt(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?);
    if let Some(subject) = cli.memory_probe {
        let bytes = rt.block_on(spawn::memory_per_child(subject, cli.children))?;
        println!("{bytes}");
        return Ok(());
    }
    let plan = if cli.smoke {
        Plan {
            restart_iterations: 20,
            reps: 1,
            group_children: 50,
            spawn_n: 50,
            memory_children: 2000,
            cast_n: 2000,
            hangs: 3,
            commits: 5,
            group_actors: 20,
            group_run: std::time::Duration::from_millis(200),
            restores: 3,
            pool_n: 2_000,
            pool_run: std::time::Duration::from_millis(300),
            dynamic_children: 1_000,
            dynamic_ops: 20,
        }
    } else if cli.quick {
        Plan {
            restart_iterations: 500,
            reps: 3,
            group_children: 1000,
            spawn_n: 2000,
            memory_children: 20_000,
            cast_n: 200_000,
            hangs: 30,
            commits: 100,
            group_actors: 1000,
            group_run: std::time::Duration::from_secs(1),
            restores: 30,
            pool_n: 100_000,
            pool_run: std::time::Duration::from_secs(1),
            dynamic_children: 100_000,
            dynamic_ops: 200,
        }
    } else {
        Plan {
            restart_iterations: 3000,
            reps: 7,
            group_children: 1000,
            spawn_n: 10_000,
            memory_children: 100_000,
            cast_n: 1_000_000,
            hangs: 100,
            commits: 300,
            group_actors: 1000,
            group_run: std::time::Duration::from_secs(2),
            restores: 100,
            pool_n: 400_000,
            pool_run: std::time::Duration::from_secs(2),
            dynamic_children: 100_000,
            dynamic_ops: 500,
        }
    };
    let wanted = |fig: &str| cli.only.as_deref().is_none_or(|o| fig.contains(o));
    let mut figures = Figures::new();
    let mut spreads: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let started = std::time::Instant::now();

    if wanted("restart_one_for_one") {
        for subject in [Subject::Warden, Subject::Ractor, Subject::RactorSupervisor, Subject::Kameo] {
            let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
            for _ in 0..plan.reps {
                let s = rt.block_on(async move {
                    match subject {
                        Subject::Warden => restart::one_for_one_warden(plan.restart_iterations).await,
                        Subject::Ractor => restart::one_for_one_ractor(plan.restart_iterations).await,
                        Subject::RactorSupervisor => {
                            restart::one_for_one_ractor_supervisor(plan.restart_iterations).await
                        }
                        Subject::Kameo => restart::one_for_one_kameo(plan.restart_iterations).await,
                    }
                })?;
                p50s.push(s.percentile_us(0.5));
                p99s.push(s.percentile_us(0.99));
            }
            spreads.insert(format!("restart_one_for_one_p50_us/{}", name(subject)), spread(&p50s));
            spreads.insert(format!("restart_one_for_one_p99_us/{}", name(subject)), spread(&p99s));
            figures.entry("restart_one_for_one_p50_us").or_default().insert(name(subject), median(p50s));
            figures.entry("restart_one_for_one_p99_us").or_default().insert(name(subject), median(p99s));
        }
    }

    // The floor of the figure above, same run: no supervisor, the actor heals itself in its
    // handler (see `restart::in_place_floor`). Kept under the "ractor" column, which it is.
    if wanted("restart_floor") || wanted("restart_one_for_one") {
        for (p50_fig, p99_fig, round_trip) in [
            ("restart_floor_p50_us", "restart_floor_p99_us", false),
            ("restart_floor_round_trip_p50_us", "restart_floor_round_trip_p99_us", true),
        ] {
            let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
            for _ in 0..plan.reps {
                let s = rt.block_on(restart::in_place_floor(plan.restart_iterations, round_trip))?;
                p50s.push(s.percentile_us(0.5));
                p99s.push(s.percentile_us(0.99));
            }
            spreads.insert(format!("{p50_fig}/ractor"), spread(&p50s));
            spreads.insert(format!("{p99_fig}/ractor"), spread(&p99s));
            figures.entry(p50_fig).or_default().insert("ractor", median(p50s));
            figures.entry(p99_fig).or_default().insert("ractor", median(p99s));
        }
    }

    if wanted("one_for_all_1000") {
        for subject in [Subject::Warden, Subject::RactorSupervisor, Subject::Kameo] {
            let mut ms = Vec::new();
            for rep in 0..plan.reps {
                ms.push(rt.block_on(async move {
                    match subject {
                        Subject::Warden => restart::one_for_all_warden(plan.group_children, rep).await,
                        Subject::RactorSupervisor => {
                            restart::one_for_all_ractor_supervisor(plan.group_children, rep).await
                        }
                        _ => restart::one_for_all_kameo(plan.group_children).await,
                    }
                })?);
            }
            spreads.insert(format!("one_for_all_1000_ms/{}", name(subject)), spread(&ms));
            figures.entry("one_for_all_1000_ms").or_default().insert(name(subject), median(ms));
        }
    }

    if wanted("dynamic_") {
        // The same figure at 100 children and at the large size, alternating within each
        // repetition; the table's ratio (warden over warden_100) is the flatness.
        let (mut r_small, mut r_large, mut e_small, mut e_large) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..plan.reps {
            r_small.push(rt.block_on(dynamic::restart_p50_us(100, plan.dynamic_ops))?);
            r_large.push(rt.block_on(dynamic::restart_p50_us(plan.dynamic_children, plan.dynamic_ops))?);
            e_small.push(rt.block_on(dynamic::exit_us(100, plan.dynamic_ops.min(50)))?);
            e_large.push(rt.block_on(dynamic::exit_us(plan.dynamic_children, plan.dynamic_ops))?);
        }
        for (fig, small, large) in
            [("dynamic_restart_p50_us_100k", r_small, r_large), ("dynamic_exit_us_100k", e_small, e_large)]
        {
            spreads.insert(format!("{fig}/warden_100"), spread(&small));
            spreads.insert(format!("{fig}/warden"), spread(&large));
            let f = figures.entry(fig).or_default();
            f.insert("warden_100", median(small));
            f.insert("warden", median(large));
        }
    }

    if wanted("spawn_child") {
        for subject in [Subject::Warden, Subject::Ractor, Subject::RactorSupervisor, Subject::Kameo] {
            let mut us = Vec::new();
            for _ in 0..plan.reps {
                us.push(rt.block_on(spawn::spawn_us(subject, plan.spawn_n))?);
            }
            spreads.insert(format!("spawn_child_us/{}", name(subject)), spread(&us));
            figures.entry("spawn_child_us").or_default().insert(name(subject), median(us));
        }
    }

    // The floor of the figure above, same run: a call to an actor that spawns and answers.
    if wanted("spawn_floor") || wanted("spawn_child") {
        let mut us = Vec::new();
        for _ in 0..plan.reps {
            us.push(rt.block_on(spawn::spawn_floor_us(plan.spawn_n))?);
        }
        spreads.insert("spawn_floor_us/ractor".into(), spread(&us));
        figures.entry("spawn_floor_us").or_default().insert("ractor", median(us));
    }

    if wanted("memory_per_child") {
        let exe = std::env::current_exe()?;
        for subject in [Subject::Warden, Subject::Ractor, Subject::RactorSupervisor, Subject::Kameo] {
            let mut bytes = Vec::new();
            for _ in 0..plan.reps.min(3) {
                let out = std::process::Command::new(&exe)
                    .args(["--memory-probe", name(subject).replace('_', "-").as_str()])
                    .args(["--children", &plan.memory_children.to_string()])
                    .output()?;
                anyhow::ensure!(
                    out.status.success(),
                    "memory probe for {} failed: {}",
                    name(subject),
                    String::from_utf8_lossy(&out.stderr)
                );
                bytes.push(String::from_utf8_lossy(&out.stdout).trim().parse::<f64>()?);
            }
            spreads.insert(format!("memory_per_child_bytes/{}", name(subject)), spread(&bytes));
            figures.entry("memory_per_child_bytes").or_default().insert(name(subject), median(bytes));
        }
    }

    if wanted("cast_ratio") {
        // Bare, supervised and watched alternate; each ratio is taken within its triple.
        let (mut bare, mut sup, mut watched) = (Vec::new(), Vec::new(), Vec::new());
        let (mut sup_ratio, mut watched_ratio) = (Vec::new(), Vec::new());
        for _ in 0..plan.reps.max(5) {
            let b = rt.block_on(spawn::cast_rate(spawn::CastSubject::Bare, plan.cast_n))?;
            let s = rt.block_on(spawn::cast_rate(spawn::CastSubject::Supervised, plan.cast_n))?;
            let w = rt.block_on(spawn::cast_rate(spawn::CastSubject::Watched, plan.cast_n))?;
            bare.push(b);
            sup.push(s);
            watched.push(w);
            sup_ratio.push(s / b);
            watched_ratio.push(w / b);
        }
        spreads.insert("supervised_cast_ratio/warden".into(), spread(&sup_ratio));
        spreads.insert("heartbeat_cast_ratio/warden".into(), spread(&watched_ratio));
        spreads.insert("cast_per_s/ractor".into(), spread(&bare));
        spreads.insert("cast_per_s/warden".into(), spread(&sup));
        figures.entry("supervised_cast_ratio").or_default().insert("warden", median(sup_ratio));
        figures.entry("heartbeat_cast_ratio").or_default().insert("warden", median(watched_ratio));
        let cast = figures.entry("cast_per_s").or_default();
        cast.insert("warden", median(sup));
        cast.insert("ractor", median(bare));
    }

    if wanted("hang_detection") {
        let deadline = std::time::Duration::from_millis(if cli.smoke { 20 } else { 100 });
        let ratios = rt.block_on(restart::hang_detection_ratios(deadline, plan.hangs))?;
        let mut s = stats::Samples::new();
        for r in &ratios {
            // Samples are kept in nanoseconds; ratios as parts per million.
            s.record(std::time::Duration::from_nanos((r * 1_000_000.0) as u64));
        }
        let p99 = s.percentile_us(0.99) / 1000.0;
        spreads.insert("hang_detection_ratio_p99/warden".into(), spread(&ratios));
        figures.entry("hang_detection_ratio_p99").or_default().insert("warden", p99);
    }

    if wanted("snapshot_commit") {
        let (mut ours, mut fsync, mut redb, mut ratio, mut redb_ratio) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..plan.reps {
            let (w, f, r) = rt.block_on(checkpoint::snapshot_commit_p50_us(plan.commits))?;
            ours.push(w);
            fsync.push(f);
            redb.push(r);
            ratio.push(w / f);
            redb_ratio.push(w / r);
        }
        spreads.insert("snapshot_commit_p50_us/warden".into(), spread(&ours));
        spreads.insert("snapshot_commit_p50_us/fsync".into(), spread(&fsync));
        spreads.insert("snapshot_commit_p50_us/redb".into(), spread(&redb));
        spreads.insert("snapshot_commit_fsync_ratio/warden".into(), spread(&ratio));
        spreads.insert("snapshot_commit_redb_ratio/warden".into(), spread(&redb_ratio));
        let fig = figures.entry("snapshot_commit_p50_us").or_default();
        fig.insert("warden", median(ours));
        fig.insert("fsync", median(fsync));
        fig.insert("redb", median(redb));
        figures.entry("snapshot_commit_fsync_ratio").or_default().insert("warden", median(ratio));
        figures.entry("snapshot_commit_redb_ratio").or_default().insert("warden", median(redb_ratio));
    }

    if wanted("group_commit") {
        let mut rates = Vec::new();
        for _ in 0..plan.reps.min(3) {
            rates.push(rt.block_on(checkpoint::group_commit_per_s(plan.group_actors, plan.group_run))?);
        }
        spreads.insert("group_commit_per_s/warden".into(), spread(&rates));
        figures.entry("group_commit_per_s").or_default().insert("warden", median(rates));
    }

    if wanted("restore_1mib") {
        let mut p99s = Vec::new();
        for _ in 0..plan.reps.min(3) {
            p99s.push(rt.block_on(checkpoint::restore_1mib_p99_ms(plan.restores))?);
        }
        spreads.insert("restore_1mib_p99_ms/warden".into(), spread(&p99s));
        figures.entry("restore_1mib_p99_ms").or_default().insert("warden", median(p99s));
    }

    if wanted("checkpoint_cast") {
        let mut ratios = Vec::new();
        for _ in 0..plan.reps.max(5) {
            let b = rt.block_on(checkpoint::bare_cast_rate(plan.cast_n))?;
            let c = rt.block_on(checkpoint::checkpointed_cast_rate(plan.cast_n))?;
            ratios.push(c / b);
        }
        spreads.insert("checkpoint_cast_ratio/warden".into(), spread(&ratios));
        figures.entry("checkpoint_cast_ratio").or_default().insert("warden", median(ratios));
    }

    if wanted("pool_throughput") {
        let (mut ours, mut theirs, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..plan.reps {
            let w = rt.block_on(pool::warden_rate(plan.pool_n, 16))?;
            let f = rt.block_on(pool::factory_rate(plan.pool_n, 16))?;
            ours.push(w);
            theirs.push(f);
            ratio.push(w / f);
        }
        spreads.insert("pool_requests_per_s/warden".into(), spread(&ours));
        spreads.insert("pool_requests_per_s/ractor_factory".into(), spread(&theirs));
        spreads.insert("pool_throughput_ratio/warden".into(), spread(&ratio));
        let fig = figures.entry("pool_requests_per_s").or_default();
        fig.insert("warden", median(ours));
        fig.insert("ractor_factory", median(theirs));
        figures.entry("pool_throughput_ratio").or_default().insert("warden", median(ratio));
    }

    if wanted("pool_failover") || wanted("pool_lost") {
        let (mut crash, mut calm, mut lost) = (Vec::new(), Vec::new(), 0u64);
        let (mut crash_max, mut calm_max) = (Vec::new(), Vec::new());
        for _ in 0..plan.reps.min(3) {
            let f = rt.block_on(pool::failover(plan.pool_run, 8))?;
            crash.push(f.p99_crashing);
            calm.push(f.p99_calm);
            crash_max.push(f.max_crashing);
            calm_max.push(f.max_calm);
            lost += f.lost;
        }
        let fig = figures.entry("pool_failover_max_us").or_default();
        fig.insert("warden", median(crash_max));
        fig.insert("no_crashes", median(calm_max));
        spreads.insert("pool_failover_p99_us/warden".into(), spread(&crash));
        spreads.insert("pool_failover_p99_us/no_crashes".into(), spread(&calm));
        let fig = figures.entry("pool_failover_p99_us").or_default();
        fig.insert("warden", median(crash));
        fig.insert("no_crashes", median(calm));
        figures.entry("pool_lost_requests").or_default().insert("warden", lost as f64);
    }

    // Last, because it installs a global metrics recorder and a tracing subscriber: the cost of
    // crash reports and metrics, on against off, in the same run.
    if wanted("restart_reports_overhead") {
        warden_observe::install_prometheus()?;
        // Crash reports are formatted as JSON log records, as a production app would, into a sink.
        let _ = tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::sink)
            .with_env_filter(tracing_subscriber::EnvFilter::new("warden=info"))
            .try_init();
        let (mut on, mut off, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..plan.reps {
            let a =
                rt.block_on(restart::one_for_one_warden_recording(plan.restart_iterations, false))?.percentile_us(0.5);
            let b =
                rt.block_on(restart::one_for_one_warden_recording(plan.restart_iterations, true))?.percentile_us(0.5);
            off.push(a);
            on.push(b);
            ratio.push(b / a);
        }
        spreads.insert("restart_p50_reports_on_us/warden".into(), spread(&on));
        spreads.insert("restart_p50_reports_off_us/warden".into(), spread(&off));
        spreads.insert("restart_reports_overhead/warden".into(), spread(&ratio));
        figures.entry("restart_p50_reports_on_us").or_default().insert("warden", median(on));
        figures.entry("restart_p50_reports_off_us").or_default().insert("warden", median(off));
        figures.entry("restart_reports_overhead").or_default().insert("warden", median(ratio));
    }

    if cli.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        print_table(&figures, &spreads);
    }
    eprintln!("warden-bench: {} reps per figure, {:.1} s in all", plan.reps, started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs each measurement as a task on a runtime worker, as actors' callers usually are: a
/// future driven by `block_on` on the main thread pays a thread wake-up on every reply.
struct Rt(tokio::runtime::Runtime);

impl Rt {
    fn block_on<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.0.block_on(async { tokio::spawn(f).await? })
    }
}

fn print_table(figures: &Figures, spreads: &BTreeMap<String, (f64, f64)>) {
    let cols =
        ["warden", "ractor", "ractor_supervisor", "kameo", "fsync", "ractor_factory", "no_crashes", "warden_100"];
    println!(
        "{:<28} {:>22} {:>22} {:>22} {:>22} {:>22} {:>22} {:>22} {:>22} {:>14}",
        "figure (median [min-max])",
        cols[0],
        cols[1],
        cols[2],
        cols[3],
        cols[4],
        cols[5],
        cols[6],
        cols[7],
        "warden/best"
    );
    for (fig, vals) in figures {
        let mut line = format!("{fig:<28}");
        for c in cols {
            let cell = match (vals.get(c), spreads.get(&format!("{fig}/{c}"))) {
                (Some(v), Some((lo, hi))) => format!("{v:.2} [{lo:.1}-{hi:.1}]"),
                (Some(v), None) => format!("{v:.2}"),
                _ => "-".to_string(),
            };
            line.push_str(&format!(" {cell:>22}"));
        }
        let best_peer = vals.iter().filter(|(k, _)| **k != "warden").map(|(_, v)| *v).fold(f64::NAN, f64::min);
        let ratio = match vals.get("warden") {
            Some(w) if best_peer.is_finite() => format!("{:.2}", w / best_peer),
            _ => "-".into(),
        };
        line.push_str(&format!(" {ratio:>14}"));
        println!("{line}");
    }
}
