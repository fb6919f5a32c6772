//! `cargo xtask build-cost [--reps N]`: what a three-actor supervision tree costs to build.
//!
//! Writes one fresh `cargo new`-style project per subject into the system's temporary
//! directory (outside the repository, so none of its Cargo settings apply), each of whose
//! `main` starts a one-for-one tree of three actors and stops it: on bare ractor (a parent that
//! re-spawns a failed child in `handle_supervisor_evt`), on kameo (a `OneForOne` parent), and on
//! warden with its default features, with `full`, and with every feature (`full` + `cluster`).
//! warden is taken from the repository's last commit (`git archive HEAD`), not from the work
//! tree, so that what is measured is what was committed.
//! Then, `--reps` times (default 3), builds each in turn with `cargo build --release` into an
//! empty target directory, counting the crates compiled and timing the build. The registry
//! is shared and filled first (`cargo fetch`, not timed). Prints a Markdown table: medians and
//! spreads over the repetitions, and each figure's ratio to bare ractor's in the same
//! repetition (median of those ratios).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// One program to build.
struct Subject {
    name: &'static str,
    dependencies: String,
    main: &'static str,
}

/// The default number of repetitions.
const DEFAULT_REPS: usize = 3;
/// Most repetitions accepted (each is several clean release builds).
const MAX_REPS: usize = 20;

pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let reps = parse_reps(args)?;
    let dir = std::env::temp_dir().join("warden-build-cost");
    let source = dir.join("warden-source");
    export_head(root, &source)?;
    let subjects = subjects(&source);
    for s in &subjects {
        write_project(&dir, s)?;
        let project = dir.join(s.name);
        run_quiet(Command::new("cargo").arg("fetch").current_dir(&project))
            .map_err(|e| format!("cargo fetch for {}: {e}", s.name))?;
    }
    // rows[subject][rep] = (crates compiled, seconds)
    let mut rows: Vec<Vec<(usize, f64)>> = vec![Vec::new(); subjects.len()];
    for rep in 0..reps {
        for (i, s) in subjects.iter().enumerate() {
            let project = dir.join(s.name);
            let target = dir.join(format!("target-{}", s.name));
            if target.exists() {
                std::fs::remove_dir_all(&target).map_err(|e| format!("cannot empty {}: {e}", target.display()))?;
            }
            let started = Instant::now();
            let out = Command::new("cargo")
                .args(["build", "--release", "--offline"])
                .current_dir(&project)
                .env("CARGO_TARGET_DIR", &target)
                .env_remove("RUSTFLAGS")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .map_err(|e| format!("cannot run cargo build for {}: {e}", s.name))?;
            let secs = started.elapsed().as_secs_f64();
            let log = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                return Err(format!("the {} project did not build:\n{log}", s.name));
            }
            let crates = log.lines().filter(|l| l.trim_start().starts_with("Compiling ")).count();
            eprintln!("xtask build-cost: rep {} {}: {crates} crates, {secs:.1} s", rep + 1, s.name);
            rows[i].push((crates, secs));
            std::fs::remove_dir_all(&target).map_err(|e| format!("cannot remove {}: {e}", target.display()))?;
        }
    }
    print_table(&subjects, &rows);
    Ok(())
}

/// Copies the files of the last commit into `into` (emptied first).
fn export_head(root: &Path, into: &Path) -> Result<(), String> {
    if into.exists() {
        std::fs::remove_dir_all(into).map_err(|e| format!("cannot empty {}: {e}", into.display()))?;
    }
    std::fs::create_dir_all(into).map_err(|e| format!("cannot create {}: {e}", into.display()))?;
    let archive = Command::new("git")
        .args(["archive", "--format=tar", "HEAD"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run git archive: {e}"))?;
    if !archive.status.success() {
        return Err(format!("git archive failed: {}", String::from_utf8_lossy(&archive.stderr)));
    }
    let mut tar = Command::new("tar")
        .args(["-x", "-f", "-"])
        .current_dir(into)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    use std::io::Write;
    tar.stdin.take().ok_or("tar has no stdin")?.write_all(&archive.stdout).map_err(|e| format!("tar: {e}"))?;
    let status = tar.wait().map_err(|e| format!("tar: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("tar failed ({status})"))
    }
}

fn parse_reps(args: &[String]) -> Result<usize, String> {
    match args {
        [] => Ok(DEFAULT_REPS),
        [flag, n] if flag == "--reps" => match n.parse::<usize>() {
            Ok(n) if (1..=MAX_REPS).contains(&n) => Ok(n),
            _ => Err(format!("--reps takes a number from 1 to {MAX_REPS}, not {n:?}")),
        },
        other => Err(format!("unexpected arguments {other:?}; usage: build-cost [--reps N]")),
    }
}

fn run_quiet(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn write_project(dir: &Path, s: &Subject) -> Result<(), String> {
    let project = dir.join(s.name);
    let src = project.join("src");
    std::fs::create_dir_all(&src).map_err(|e| format!("cannot create {}: {e}", src.display()))?;
    let manifest = format!(
        "[package]\nname = \"tree-{}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n{}\n\n[workspace]\n",
        s.name, s.dependencies
    );
    write(&project.join("Cargo.toml"), &manifest)?;
    write(&src.join("main.rs"), s.main)
}

fn write(path: &PathBuf, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

fn print_table(subjects: &[Subject], rows: &[Vec<(usize, f64)>]) {
    let reps = rows[0].len();
    println!("| program | crates compiled | x bare ractor | clean release build, s (median, min-max of {reps}) | x bare ractor (median of same-run ratios) |");
    println!("|---|---|---|---|---|");
    for (i, s) in subjects.iter().enumerate() {
        let crates = rows[i][0].0;
        let secs: Vec<f64> = rows[i].iter().map(|r| r.1).collect();
        let ratios: Vec<f64> = (0..reps).map(|r| rows[i][r].1 / rows[0][r].1).collect();
        let (lo, hi) = spread(&secs);
        println!(
            "| {} | {crates} | {:.2} | {:.1} ({lo:.1}-{hi:.1}) | {:.2} |",
            s.name,
            crates as f64 / rows[0][0].0 as f64,
            median(secs.clone()),
            median(ratios)
        );
    }
}

fn subjects(root: &Path) -> Vec<Subject> {
    let tokio = r#"tokio = { version = "1", features = ["rt-multi-thread", "macros"] }"#;
    let ractor = r#"ractor = "0.16""#;
    let warden =
        |features: &str| format!("warden = {{ path = {:?}{features} }}\n{ractor}\n{tokio}", root.display().to_string());
    vec![
        Subject { name: "ractor", dependencies: format!("{ractor}\n{tokio}"), main: RACTOR_MAIN },
        Subject { name: "kameo", dependencies: format!("kameo = \"0.22\"\n{tokio}"), main: KAMEO_MAIN },
        Subject { name: "warden", dependencies: warden(""), main: WARDEN_MAIN },
        Subject { name: "warden-full", dependencies: warden(", features = [\"full\"]"), main: WARDEN_MAIN },
        Subject {
            name: "warden-all",
            dependencies: warden(", features = [\"full\", \"cluster\"]"),
            main: WARDEN_CLUSTER_MAIN,
        },
    ]
}

const RACTOR_MAIN: &str = r#"//! A one-for-one tree of three actors on bare ractor: the parent re-spawns a failed child.
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

struct Worker;

impl Actor for Worker {
    type Msg = u32;
    type State = u32;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<u32>, _: ()) -> Result<u32, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(&self, _: ActorRef<u32>, n: u32, total: &mut u32) -> Result<(), ActorProcessingErr> {
        *total += n;
        Ok(())
    }
}

struct Parent;

impl Actor for Parent {
    type Msg = ();
    type State = Vec<ActorRef<u32>>;
    type Arguments = ();
    async fn pre_start(&self, me: ActorRef<()>, _: ()) -> Result<Self::State, ActorProcessingErr> {
        let mut kids = Vec::new();
        for _ in 0..3 {
            kids.push(Actor::spawn_linked(None, Worker, (), me.get_cell()).await?.0);
        }
        Ok(kids)
    }
    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<()>,
        evt: SupervisionEvent,
        kids: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, _) = evt {
            if let Some(i) = kids.iter().position(|k| k.get_id() == cell.get_id()) {
                kids[i] = Actor::spawn_linked(None, Worker, (), me.get_cell()).await?.0;
            }
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (parent, done) = Actor::spawn(None, Parent, ()).await?;
    parent.stop(None);
    done.await?;
    Ok(())
}
"#;

const KAMEO_MAIN: &str = r#"//! A one-for-one tree of three actors on kameo.
use kameo::actor::{Actor, ActorRef, Spawn};
use kameo::error::Infallible;
use kameo::message::{Context, Message};
use kameo::supervision::SupervisionStrategy;

struct Worker(u32);

impl Actor for Worker {
    type Args = ();
    type Error = Infallible;
    async fn on_start(_: (), _: ActorRef<Self>) -> Result<Self, Infallible> {
        Ok(Worker(0))
    }
}

struct Add(u32);

impl Message<Add> for Worker {
    type Reply = ();
    async fn handle(&mut self, Add(n): Add, _: &mut Context<Self, ()>) {
        self.0 += n;
    }
}

struct Parent;

impl Actor for Parent {
    type Args = ();
    type Error = Infallible;
    fn supervision_strategy() -> SupervisionStrategy {
        SupervisionStrategy::OneForOne
    }
    async fn on_start(_: (), me: ActorRef<Self>) -> Result<Self, Infallible> {
        for _ in 0..3 {
            let worker = Worker::supervise(&me, ()).spawn().await;
            let _ = worker.tell(Add(1)).await;
        }
        Ok(Parent)
    }
}

#[tokio::main]
async fn main() {
    let parent = Parent::spawn(());
    parent.wait_for_startup().await;
    let _ = parent.stop_gracefully().await;
    parent.wait_for_shutdown().await;
}
"#;

const WARDEN_MAIN: &str = r#"//! A one-for-one tree of three actors on warden.
use ractor::{Actor, ActorProcessingErr, ActorRef};
use warden::prelude::*;

#[derive(Clone)]
struct Worker;

impl Actor for Worker {
    type Msg = u32;
    type State = u32;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<u32>, _: ()) -> Result<u32, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(&self, _: ActorRef<u32>, n: u32, total: &mut u32) -> Result<(), ActorProcessingErr> {
        *total += n;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut tree = SupervisorSpec::one_for_one();
    let mut handles = Vec::new();
    for i in 0..3 {
        let worker = ChildSpec::worker(format!("worker-{i}"), Worker, ());
        handles.push(worker.handle());
        tree = tree.child(worker);
    }
    let app = Supervisor::start("app", tree).await?;
    for handle in &handles {
        handle.cast(1)?;
    }
    app.shutdown().await;
    Ok(())
}
"#;

/// With the `cluster` feature a message type must implement `ractor::Message`; `u32` does
/// (ractor implements it for its serializable primitives), so the program is the same.
const WARDEN_CLUSTER_MAIN: &str = WARDEN_MAIN;
