//! `cargo xtask bench [--quick] [--out FILE]`: runs the benchmark binary of the integration tests.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::util;

pub(crate) fn run(out: Option<PathBuf>, quick: bool) -> anyhow::Result<()> {
    util::require_bpf_linker()?;
    // The child runs in the workspace root, so resolve a relative --out against the
    // directory the user ran `cargo xtask` from.
    let out = match out {
        None => util::workspace_root().join("BENCHMARKS.md"),
        Some(path) if path.is_absolute() => path,
        Some(path) => std::env::current_dir()
            .context("could not read the current directory")?
            .join(path),
    };
    // The daemon sections drive the real `leash` binary and every section the probe;
    // `cargo run` builds neither.
    util::run(util::cargo().args([
        "build",
        "--release",
        "-p",
        "leash",
        "--bin",
        "leash",
        "-p",
        "integration-tests",
        "--bin",
        "leash-probe",
    ]))?;
    util::run(
        util::cargo()
            .args([
                "run",
                "--release",
                "-p",
                "integration-tests",
                "--bin",
                "leash-bench",
            ])
            .args(["--", "--out"])
            .arg(&out)
            .args(quick.then_some("--quick")),
    )
}
