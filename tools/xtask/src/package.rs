//! `cargo xtask package`: every published crate packages, in dependency order, and the
//! packages compile.
//!
//! `cargo package --workspace` verifies crates that depend on each other within one
//! workspace, but warden's published crates span two (the cluster's crates live in
//! `cluster/`), and `cargo package` resolves a dependency from another workspace on
//! crates.io, where warden is not (yet). So the crates are packaged in the order a real
//! publish would take, and each later step is given the packages made so far with
//! `--config patch.crates-io.<crate>.path=...` pointing at the unpacked copies under
//! `target/package/`: a crate is always built from what was packaged, never from the tree.
//!
//! Every crate is packaged without `cargo package`'s own verification (a full build of the
//! package, each with a feature set of its own: on CI's 2 cores, verifying all seven took 392 s
//! and 3 GB of disk, 2026-12-02, and verifying the two at the top still took about 80 s of a
//! CI run, 2026-12-04) and unpacked here. Then the crates at the top are compiled from their
//! unpacked copies with `cargo check --locked` (against the lockfile in the package): the
//! facade with all of its features, and `warden-cli`, whose dependencies are the packaged
//! copies of every library crate. A check compiles every source file, expands every
//! `include_str!` and runs every build script, so it finds what verification exists to find:
//! a file left out of a package, a dependency missing from its manifest. It reuses the
//! dependencies' metadata the feature matrix and clippy already built.

use std::path::Path;
use std::process::Command;

use crate::cargo;

/// How one crate's package is checked.
#[derive(Clone, Copy)]
enum Check {
    /// Unpacked; a later check compiles it as a dependency.
    Unpack,
    /// Unpacked, then compiled from its copy (`cargo check`), with these features.
    Compile(&'static str),
}

/// The published crates in dependency order, with the workspace each belongs to.
const ORDER: [(&str, &str, Check); 7] = [
    ("warden-core", "Cargo.toml", Check::Unpack),
    ("warden-observe", "Cargo.toml", Check::Unpack),
    ("warden-checkpoint", "Cargo.toml", Check::Unpack),
    ("warden-pool", "Cargo.toml", Check::Unpack),
    ("warden-cluster", "crates/cluster/Cargo.toml", Check::Unpack),
    ("warden", "Cargo.toml", Check::Compile("full,cluster")),
    ("warden-cli", "crates/cluster/Cargo.toml", Check::Compile("")),
];

/// The version every warden crate carries (the workspaces' `version`).
const VERSION: &str = "0.1.0";

pub fn run(root: &Path) -> Result<(), String> {
    let mut patches: Vec<String> = Vec::new();
    for (krate, manifest, check) in ORDER {
        let mut args: Vec<String> = vec![
            "package".into(),
            "--manifest-path".into(),
            manifest.into(),
            "--package".into(),
            krate.into(),
            // The check is about the crates' contents; local changes need not be committed.
            "--allow-dirty".into(),
        ];
        // Every crate packaged so far, also those of the same workspace: `cargo package -p X`
        // resolves only X itself locally. (Cargo warns of the patches a crate does not use.)
        for patch in &patches {
            args.push("--config".into());
            args.push(patch.clone());
        }
        args.push("--no-verify".into());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cargo(root, &refs, &[])?;
        let packages = root.join("target/package");
        let unpacked = packages.join(format!("{krate}-{VERSION}"));
        unpack(&packages, krate)?;
        if !unpacked.join("Cargo.toml").is_file() {
            return Err(format!("no unpacked copy at {}", unpacked.display()));
        }
        if let Check::Compile(features) = check {
            compile(root, &unpacked, krate, features, &patches)?;
        }
        patches.push(format!("patch.crates-io.{krate}.path={:?}", unpacked.display().to_string()));
    }
    Ok(())
}

/// `cargo check --locked` of the unpacked `krate`, with `features` and the packages made so far.
/// The copy is checked from a directory outside the repository: inside it, cargo would take
/// the repository's workspace for the package's own and refuse a package that is not a member.
fn compile(root: &Path, unpacked: &Path, krate: &str, features: &str, patches: &[String]) -> Result<(), String> {
    let outside = std::env::temp_dir().join("warden-package-check");
    let copy = outside.join(format!("{krate}-{VERSION}"));
    if copy.exists() {
        std::fs::remove_dir_all(&copy).map_err(|e| format!("cannot remove the old copy {}: {e}", copy.display()))?;
    }
    std::fs::create_dir_all(&outside).map_err(|e| format!("cannot make {}: {e}", outside.display()))?;
    let status = Command::new("cp")
        .arg("-R")
        .arg(unpacked)
        .arg(&outside)
        .status()
        .map_err(|e| format!("could not run cp to copy {}: {e}", unpacked.display()))?;
    if !status.success() {
        return Err(format!("cp could not copy {} to {} ({status})", unpacked.display(), outside.display()));
    }
    let manifest = copy.join("Cargo.toml").display().to_string();
    let target = root.join("target").display().to_string();
    let mut args: Vec<String> =
        vec!["check".into(), "--locked".into(), "--manifest-path".into(), manifest, "--target-dir".into(), target];
    if !features.is_empty() {
        args.extend(["--features".into(), features.into()]);
    }
    for patch in patches {
        args.push("--config".into());
        args.push(patch.clone());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    cargo(root, &refs, &[])
}

/// Unpacks `target/package/<krate>-<version>.crate` (a gzipped tarball) where `cargo
/// package`'s verification would have, replacing an earlier copy. Uses the system's `tar`,
/// as xtask stays std only.
fn unpack(packages: &Path, krate: &str) -> Result<(), String> {
    let name = format!("{krate}-{VERSION}");
    let dir = packages.join(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("cannot remove the old copy {}: {e}", dir.display()))?;
    }
    let file = format!("{name}.crate");
    let status = Command::new("tar")
        .current_dir(packages)
        .args(["-xzf", &file])
        .status()
        .map_err(|e| format!("could not run tar to unpack {file}: {e}"))?;
    if !status.success() {
        return Err(format!("tar could not unpack {} ({status})", packages.join(&file).display()));
    }
    Ok(())
}
