//! The bundled demo clusters: `warden demo <bank|pipeline>` and the node processes it runs.
//!
//! Layout: [`plan`] (fault plans), [`launcher`] (processes, network, workload, fault
//! injection, progress, the final checks), [`checker`] (the stores and the history, judged
//! after the run), [`report`] (the JSON report), [`protocol`] (the typed lines between the
//! launcher and its nodes), [`node`] and [`gateway`] (one node process and its requests),
//! [`bank`] and [`pipeline`] (the demos' actors), [`wire`] (their messages' encoding). See
//! docs/demos.md.

pub mod bank;
pub mod checker;
pub mod gateway;
pub mod launcher;
pub mod node;
pub mod pipeline;
pub mod plan;
pub mod protocol;
pub mod report;
pub mod wire;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Which demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Demo {
    /// Accounts as durable, replicated singletons; transfers; a singleton auditor.
    Bank,
    /// Jobs through a supervised pool on every node; a replicated results singleton.
    Pipeline,
}

impl Demo {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Demo::Bank => "bank",
            Demo::Pipeline => "pipeline",
        }
    }

    /// The singleton whose state and whereabouts the run follows (and node faults aim at).
    pub fn key_singleton(self) -> &'static str {
        match self {
            Demo::Bank => "auditor",
            Demo::Pipeline => "results",
        }
    }

    /// The checkpoint key a singleton of this demo saves its state under.
    pub fn checkpoint_key(self, singleton: &str) -> Option<String> {
        match self {
            Demo::Bank => Some(bank::key_of(singleton)),
            Demo::Pipeline => (singleton == "results").then(|| pipeline::RESULTS_KEY.to_string()),
        }
    }

    /// Its singletons.
    pub fn singletons(self, accounts: usize) -> Vec<String> {
        match self {
            Demo::Bank => {
                (0..accounts).map(bank::account_name).chain(["auditor".to_string(), "register".to_string()]).collect()
            }
            Demo::Pipeline => vec!["results".into()],
        }
    }

    /// What its fault plans may hit.
    pub fn targets(self, nodes: &[String], accounts: usize, partitions: bool) -> plan::Targets {
        match self {
            Demo::Bank => plan::Targets {
                nodes: nodes.to_vec(),
                actors: self.singletons(accounts),
                key_singleton: self.key_singleton().into(),
                partitions,
            },
            Demo::Pipeline => plan::Targets {
                nodes: nodes.to_vec(),
                actors: nodes.iter().map(|n| format!("worker@{n}")).chain(["results".to_string()]).collect(),
                key_singleton: self.key_singleton().into(),
                partitions,
            },
        }
    }
}

/// `warden demo`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Which demo.
    #[arg(value_enum)]
    pub demo: Demo,
    /// Node processes to start (at least 3: a majority must survive a lost node).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// How long the workload runs (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
    pub duration: Duration,
    /// The fault plan: `chaos` (seeded random mix), `none`, or a list such as
    /// `5s:panic:acct-3,8s:kill:n2,12s:restart:n2,16s:stop:@auditor:2s`.
    #[arg(long, default_value = "chaos")]
    pub faults: String,
    /// The seed of the chaos plan.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Where the nodes keep their stores (default: a temporary directory, removed after).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Accounts (bank).
    #[arg(long, default_value_t = 12)]
    pub accounts: usize,
    /// Concurrent clients of the workload.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// No live progress on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Show the nodes' logs on stderr.
    #[arg(long)]
    pub node_logs: bool,
    /// Serve the observer web page (live trees, crash reports, membership, fault buttons) on
    /// this address, 127.0.0.1 on a free port when none is given; its address is printed.
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:0")]
    pub observe: Option<std::net::SocketAddr>,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    plan::parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration such as 30s or 2m"))
}

/// What a run needs, validated.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Which demo.
    pub demo: Demo,
    /// Node processes.
    pub nodes: usize,
    /// Workload length.
    pub duration: Duration,
    /// The plan's seed.
    pub seed: u64,
    /// Stores' home, if given.
    pub data_dir: Option<PathBuf>,
    /// Accounts (bank).
    pub accounts: usize,
    /// Concurrent clients.
    pub concurrency: usize,
    /// No progress output.
    pub quiet: bool,
    /// Nodes' logs to stderr.
    pub node_logs: bool,
    /// Where to serve the observer, if at all.
    pub observe: Option<std::net::SocketAddr>,
}

/// Runs `warden demo`; returns the process exit code.
pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        args.nodes >= 3,
        "--nodes {}: a demo cluster needs at least 3 nodes (a majority must survive a lost node)",
        args.nodes
    );
    anyhow::ensure!(args.nodes <= 9, "--nodes {}: at most 9 on one machine", args.nodes);
    anyhow::ensure!(args.accounts >= 2, "--accounts {}: transfers need at least 2 accounts", args.accounts);
    anyhow::ensure!((1..=64).contains(&args.concurrency), "--concurrency {}: between 1 and 64", args.concurrency);
    anyhow::ensure!(args.accounts <= 100_000, "--accounts {}: at most 100,000", args.accounts);
    let names: Vec<String> = (1..=args.nodes).map(|i| format!("n{i}")).collect();
    let want_partitions = args.faults == "chaos" || args.faults.contains("partition");
    let (net, network) = launcher::net::Net::choose(want_partitions);
    let targets = args.demo.targets(&names, args.accounts, net.partitions());
    let plan = match args.faults.as_str() {
        "chaos" => plan::chaos(args.seed, args.duration, &targets),
        "none" => Vec::new(),
        list => plan::parse_list(list, &targets)?,
    };
    if let Some(f) = plan.iter().find(|f| f.at >= args.duration) {
        anyhow::bail!(
            "fault plan: {} at {:?} is after the end of the run ({:?})",
            f.action.kind(),
            f.at,
            args.duration
        );
    }
    let settings = RunSettings {
        demo: args.demo,
        nodes: args.nodes,
        duration: args.duration,
        seed: args.seed,
        data_dir: args.data_dir.clone(),
        accounts: args.accounts,
        concurrency: args.concurrency,
        quiet: args.quiet,
        node_logs: args.node_logs,
        observe: args.observe,
    };
    if !args.quiet {
        eprintln!(
            "warden demo {}: {} nodes ({network}), {:?} of workload, {} planned faults (seed {})",
            args.demo.name(),
            args.nodes,
            args.duration,
            plan.len(),
            args.seed
        );
        for f in &plan {
            eprintln!("  at {:>5.1}s: {} {}", f.at.as_secs_f64(), f.action.kind(), f.action.target());
        }
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted: stopping the nodes");
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let report = match launcher::run(settings, plan, (net, network), interrupted.clone()).await {
        Ok(r) => r,
        Err(e) if interrupted.load(std::sync::atomic::Ordering::Relaxed) => {
            eprintln!("stopped: {e:#}");
            return Ok(130);
        }
        Err(e) => return Err(e),
    };
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    if let Some(path) = &args.report {
        launcher::write_report(path, &report)?;
    }
    if !args.quiet {
        eprintln!(
            "{}: {} ({} ops acknowledged, {} lost; {}/{}/{} faults injected/detected/recovered; availability {:.2}%)",
            if report.invariant_ok { "INVARIANT HELD" } else { "INVARIANT BROKEN" },
            report.invariant,
            report.acknowledged_ops,
            report.lost_acknowledged_ops,
            report.faults_injected,
            report.faults_detected,
            report.faults_recovered,
            report.availability * 100.0
        );
    }
    Ok(if report.invariant_ok { 0 } else { 1 })
}
