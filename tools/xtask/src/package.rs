//! `cargo xtask package`: every published crate packages, in dependency order.
//!
//! `cargo package --workspace` verifies crates that depend on each other within one
//! workspace, but warden's published crates span two (the cluster's crates live in
//! `cluster/`), and `cargo package` resolves a dependency from another workspace on
//! crates.io, where warden is not (yet). So the crates are packaged in the order a real
//! publish would take, and each later step is given the packages made so far with
//! `--config patch.crates-io.<crate>.path=...` pointing at the verified copies under
//! `target/package/`: a crate is always built from what was packaged, never from the tree.

use std::path::Path;

use crate::cargo;

/// The published crates in dependency order, with the workspace each belongs to.
const ORDER: [(&str, &str); 7] = [
    ("warden-core", "Cargo.toml"),
    ("warden-observe", "Cargo.toml"),
    ("warden-checkpoint", "Cargo.toml"),
    ("warden-pool", "Cargo.toml"),
    ("warden-cluster", "crates/cluster/Cargo.toml"),
    ("warden", "Cargo.toml"),
    ("warden-cli", "crates/cluster/Cargo.toml"),
];

/// The version every warden crate carries (the workspaces' `version`).
const VERSION: &str = "0.1.0";

pub fn run(root: &Path) -> Result<(), String> {
    let mut patches: Vec<String> = Vec::new();
    for (krate, manifest) in ORDER {
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
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cargo(root, &refs, &[])?;
        let unpacked = root.join("target/package").join(format!("{krate}-{VERSION}"));
        if !unpacked.join("Cargo.toml").is_file() {
            return Err(format!("cargo package left no verified copy at {}", unpacked.display()));
        }
        patches.push(format!("patch.crates-io.{krate}.path={:?}", unpacked.display().to_string()));
    }
    Ok(())
}
