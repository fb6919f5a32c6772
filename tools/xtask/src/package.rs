//! `cargo xtask package`: every published crate packages, in dependency order.
//!
//! `cargo package --workspace` verifies crates that depend on each other within one
//! workspace, but warden's published crates span two (the cluster's crates live in
//! `cluster/`), and `cargo package` resolves a dependency from another workspace on
//! crates.io, where warden is not (yet). So the crates are packaged in the order a real
//! publish would take, and each later step is given the packages made so far with
//! `--config patch.crates-io.<crate>.path=...` pointing at the unpacked copies under
//! `target/package/`: a crate is always built from what was packaged, never from the tree.
//!
//! Only the crates at the top are verified (built from their package): `warden-cli`, whose
//! build compiles the packaged copies of every library crate it uses, and the facade with all
//! of its features. The others are packaged without `cargo package`'s own verification and
//! unpacked here, since each verification is a full build with a feature set of its own: on
//! CI's 2 cores, verifying all seven took 392 s and 3 GB of disk (2026-12-02), and the
//! libraries are built from their packages by the two verifications that remain anyway.

use std::path::Path;
use std::process::Command;

use crate::cargo;

/// How one crate's package is checked.
#[derive(Clone, Copy)]
enum Check {
    /// Packaged without verification and unpacked; a later verification builds it.
    Unpack,
    /// `cargo package`'s own verification (a build of the package), with these features.
    Verify(&'static str),
}

/// The published crates in dependency order, with the workspace each belongs to.
const ORDER: [(&str, &str, Check); 7] = [
    ("warden-core", "Cargo.toml", Check::Unpack),
    ("warden-observe", "Cargo.toml", Check::Unpack),
    ("warden-checkpoint", "Cargo.toml", Check::Unpack),
    ("warden-pool", "Cargo.toml", Check::Unpack),
    ("warden-cluster", "crates/cluster/Cargo.toml", Check::Unpack),
    ("warden", "Cargo.toml", Check::Verify("full,cluster")),
    ("warden-cli", "crates/cluster/Cargo.toml", Check::Verify("")),
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
        match check {
            Check::Unpack => args.push("--no-verify".into()),
            Check::Verify("") => {}
            Check::Verify(features) => args.extend(["--features".into(), features.into()]),
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cargo(root, &refs, &[])?;
        let packages = root.join("target/package");
        let unpacked = packages.join(format!("{krate}-{VERSION}"));
        if let Check::Unpack = check {
            unpack(&packages, krate)?;
        }
        if !unpacked.join("Cargo.toml").is_file() {
            return Err(format!("no unpacked copy at {}", unpacked.display()));
        }
        patches.push(format!("patch.crates-io.{krate}.path={:?}", unpacked.display().to_string()));
    }
    Ok(())
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
