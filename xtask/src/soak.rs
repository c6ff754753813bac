//! `cargo xtask soak [--minutes N]`: builds the daemon, the probe and the soak driver,
//! then runs the kill -9 soak (`tests/src/bin/soak`) as root: a workload of concurrent
//! tasks while the daemon is killed and restarted, a prober checking enforcement
//! throughout, and the leak, counter, audit and memory checks at the end.

use anyhow::{Context as _, bail};

use crate::util;

/// How long the soak of `cargo xtask test` runs.
pub(crate) const CI_MINUTES: f64 = 2.0;

pub(crate) fn run(minutes: f64, workers: Option<usize>) -> anyhow::Result<()> {
    if !util::is_root().context("could not tell whether this runs as root")? {
        bail!("the soak loads BPF programs and must run as root (sudo -E cargo xtask soak)");
    }
    util::require_bpf_linker()?;
    util::run(util::cargo().args([
        "build",
        "-p",
        "leash",
        "--bin",
        "leash",
        "-p",
        "integration-tests",
        "--bin",
        "leash-probe",
        "--bin",
        "leash-soak",
    ]))?;
    let mut soak = std::process::Command::new(util::target_dir().join("debug/leash-soak"));
    soak.current_dir(util::workspace_root())
        .args(["--minutes", &minutes.to_string()]);
    if let Some(n) = workers {
        soak.args(["--workers", &n.to_string()]);
    }
    util::run(&mut soak)
}
