//! warden's project tasks, run as `cargo xtask <task>` (or `cargo test-all`) from the
//! repository root.
//!
//! warden is three Cargo workspaces (see the top-level `Cargo.toml`): the lean one, `cluster/`
//! and `crates/warden-bench`. They must stay apart, because the cluster's crates switch on
//! ractor's `cluster` feature and Cargo unifies features across everything one command
//! builds. These tasks run what has to run in each of them:
//!
//! | task | what it does |
//! |---|---|
//! | `test [ARGS]` | `cargo test --workspace [ARGS]` in each workspace, in turn; fails if any failed |
//! | `features` | checks the facade with no default features, with each feature alone, and with all |
//! | `docs` | `cargo doc --workspace --no-deps` with `RUSTDOCFLAGS=-D warnings` in the library workspaces |
//! | `package` | `cargo package` of every published crate, in dependency order, and a check of the top two from their packages (see `package.rs`) |
//! | `build-cost [--reps N]` | the clean-build figures of docs/benchmarks.md (see `build_cost.rs`) |

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod build_cost;
mod package;

/// One Cargo workspace of the repository.
pub struct Workspace {
    /// What `test` prints before running it.
    pub name: &'static str,
    /// Its manifest, relative to the repository root.
    pub manifest: &'static str,
    /// Whether it holds library crates whose docs are checked.
    pub has_docs: bool,
}

/// Every workspace, in the order their tests run: the lean one first (it is what most
/// changes touch), the cluster one, the benchmark.
pub const WORKSPACES: [Workspace; 3] = [
    Workspace { name: "lean (facade, core, checkpoint, pool, observe)", manifest: "Cargo.toml", has_docs: true },
    Workspace {
        name: "cluster (warden-cluster, warden-cli, examples/cluster_app)",
        manifest: "crates/cluster/Cargo.toml",
        has_docs: true,
    },
    Workspace {
        name: "bench (warden-bench with its peers)",
        manifest: "crates/warden-bench/Cargo.toml",
        has_docs: false,
    },
];

/// The facade's features that `features` checks one at a time.
const FACADE_FEATURES: [&str; 7] = ["checkpoint", "pool", "metrics", "serde", "observe", "cluster", "full"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = match repository_root() {
        Ok(root) => root,
        Err(e) => {
            eprintln!("xtask: {e}");
            return ExitCode::from(2);
        }
    };
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match task {
        "test" => test(&root, rest),
        "features" => features(&root),
        "docs" => docs(&root),
        "package" => package::run(&root),
        "build-cost" => build_cost::run(&root, rest),
        "help" | "--help" | "-h" => {
            println!("{}", USAGE);
            Ok(())
        }
        other => Err(format!("unknown task {other:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask <test [ARGS] | features | docs | package | build-cost [--reps N]>";

/// The repository root: the directory of this crate's workspace (two levels above it).
fn repository_root() -> Result<PathBuf, String> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .filter(|root| root.join("crates/cluster/Cargo.toml").is_file())
        .ok_or_else(|| format!("cannot find the repository root above {}", here.display()))
}

/// Runs `cargo <args>` in `root`, echoing the command; `Err` names it if it failed.
pub fn cargo(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let shown = format!("cargo {}", args.join(" "));
    eprintln!("xtask: {shown}");
    let status = cmd.status().map_err(|e| format!("could not run `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}

/// `cargo test --workspace` in each workspace; runs them all, then reports every failure.
fn test(root: &Path, extra: &[String]) -> Result<(), String> {
    let mut failed = Vec::new();
    for ws in &WORKSPACES {
        eprintln!("\nxtask: tests of the {} workspace", ws.name);
        let mut args = vec!["test", "--workspace", "--manifest-path", ws.manifest];
        args.extend(extra.iter().map(String::as_str));
        if let Err(e) = cargo(root, &args, &[]) {
            failed.push(e);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// The facade with no default features, each feature alone, and every feature (`full` +
/// `cluster`), so that no combination rots. `check` is enough: these builds differ only in
/// which code is compiled in.
fn features(root: &Path) -> Result<(), String> {
    let base = ["check", "--package", "warden", "--no-default-features"];
    cargo(root, &base, &[])?;
    for feature in FACADE_FEATURES {
        let mut args = base.to_vec();
        args.extend(["--features", feature]);
        cargo(root, &args, &[])?;
    }
    let mut all = base.to_vec();
    all.extend(["--features", "full,cluster"]);
    cargo(root, &all, &[])
}

fn docs(root: &Path) -> Result<(), String> {
    let deny = [("RUSTDOCFLAGS", "-D warnings")];
    // The facade with every layer of its workspace, as docs.rs shows it.
    cargo(root, &["doc", "--workspace", "--no-deps", "--exclude", "xtask", "--features", "warden/full"], &deny)?;
    for ws in WORKSPACES.iter().filter(|ws| ws.has_docs && ws.manifest != "Cargo.toml") {
        cargo(root, &["doc", "--workspace", "--no-deps", "--manifest-path", ws.manifest], &deny)?;
    }
    Ok(())
}
