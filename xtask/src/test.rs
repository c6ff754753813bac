//! `cargo xtask test [-- TEST_FILTER...]`: the checks CI runs, in order, stopping at the
//! first failure.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::util::{self, Counts};
use crate::{fuzz, setup};

type Step<'a> = (
    &'static str,
    Box<dyn Fn(&mut Counts) -> anyhow::Result<()> + 'a>,
);

pub(crate) fn run(filters: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    eprintln!("==> setup");
    setup::run(setup::Mode::Implicit)?;

    let steps: [Step; 9] = [
        ("fmt", Box::new(|_| fmt())),
        ("clippy (host)", Box::new(|_| clippy_host())),
        ("clippy (eBPF)", Box::new(|_| clippy_ebpf())),
        ("unit tests", Box::new(unit_tests)),
        ("deploy manifests and observability", Box::new(deploy_tests)),
        ("benchmark smoke run", Box::new(|_| bench_smoke())),
        ("fuzz smoke run", Box::new(|_| fuzz::smoke())),
        (
            "integration tests",
            Box::new(|c| integration_tests(c, filters)),
        ),
        ("soak (2 minutes)", Box::new(|_| soak(filters))),
    ];
    let names: Vec<&str> = steps.iter().map(|(name, _)| *name).collect();
    let mut counts = Counts::default();
    for (index, (name, step)) in steps.iter().enumerate() {
        eprintln!("==> {name}");
        if let Err(err) = step(&mut counts) {
            let not_run = &names[index + 1..];
            eprintln!(
                "==> test: FAILED at `{name}` after {:.0?}; passed: {}; not run: {}",
                started.elapsed(),
                list(&names[..index]),
                list(not_run),
            );
            return Err(err.context(format!("test step `{name}` failed")));
        }
    }
    eprintln!(
        "==> test: all {} steps passed ({}) in {:.0?}",
        names.len(),
        names.join(", "),
        started.elapsed()
    );
    // One plain closing line over every cargo test binary, so CI reads the whole run.
    println!(
        "{} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    Ok(())
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn fmt() -> anyhow::Result<()> {
    util::run(util::cargo().args(["fmt", "--all", "--", "--check"]))
}

/// Builds the eBPF object too (agent-userspace embeds it), so this needs bpf-linker.
fn clippy_host() -> anyhow::Result<()> {
    util::require_bpf_linker()?;
    util::run(
        util::cargo()
            .arg("clippy")
            .args(util::HOST_WORKSPACE)
            .args(["--all-targets", "--", "-D", "warnings"]),
    )
}

/// Lints agent-ebpf the way aya-build compiles it: nightly, the BPF target, `core`
/// rebuilt from source, and the `bpf_target_arch` cfg.
fn clippy_ebpf() -> anyhow::Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(util::workspace_root().join("agent-ebpf"))
        .args(["+nightly", "clippy", "--package", "leash-ebpf"])
        .args(["--target", "bpfel-unknown-none", "-Zbuild-std=core"])
        .arg("--target-dir")
        .arg(util::target_dir().join("ebpf-clippy"))
        .args(["--", "-D", "warnings"])
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
        )
        // As aya-build does: a RUSTC or wrapper set for the host build must not leak in.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    util::run(&mut cmd)
}

/// Unit tests of every host crate, with agent-userspace's `tests/layers.rs`: the layer
/// rules and import cycles of docs/architecture.md, and no reference to a document
/// outside the repository.
fn unit_tests(counts: &mut Counts) -> anyhow::Result<()> {
    util::require_bpf_linker()?;
    counts.add(util::run_tests(
        util::cargo()
            .arg("test")
            .args(util::HOST_WORKSPACE)
            .args(["--exclude", "integration-tests"]),
    )?);
    Ok(())
}

/// Kubernetes manifests, the Helm chart, the systemd unit, the Grafana dashboard and
/// the alert rules, checked by pytest in a pinned venv (see tests/deploy/run.sh).
fn deploy_tests(counts: &mut Counts) -> anyhow::Result<()> {
    counts.add(util::run_tests(
        Command::new("bash").arg(util::workspace_root().join("tests/deploy/run.sh")),
    )?);
    Ok(())
}

/// The criterion benchmarks with `--quick`: proves the harness runs, not the numbers.
fn bench_smoke() -> anyhow::Result<()> {
    util::run(util::cargo().args([
        "bench",
        "-p",
        "leash",
        "--bench",
        "hot_paths",
        "--",
        "--quick",
    ]))
}

/// The short kill -9 soak; left out of a filtered run, which asks for some tests only.
fn soak(filters: &[String]) -> anyhow::Result<()> {
    if !filters.is_empty() {
        eprintln!("skipped: a test filter was given");
        return Ok(());
    }
    crate::soak::run(crate::soak::CI_MINUTES, None)
}

fn integration_tests(counts: &mut Counts, filters: &[String]) -> anyhow::Result<()> {
    if !util::is_root().context("could not tell whether this runs as root")? {
        bail!(
            "integration tests load BPF programs and must run as root (sudo -E cargo xtask test)"
        );
    }
    util::require_bpf_linker()?;
    // The daemon tests drive the real `leash` binary, which `cargo test` of another
    // package does not build.
    util::run(util::cargo().args(["build", "-p", "leash", "--bin", "leash"]))?;
    counts.add(util::run_tests(
        util::cargo()
            .args(["test", "-p", "integration-tests", "--", "--test-threads=1"])
            .args(filters),
    )?);
    Ok(())
}
