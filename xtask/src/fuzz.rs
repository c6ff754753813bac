//! `cargo xtask fuzz [--target T] [--time S]`: the cargo-fuzz targets in `fuzz/` (a
//! workspace of its own, on nightly), each run for a while from its committed corpus.
//! New inputs go to `target/fuzz-corpus/<target>/`, so the committed seeds stay as
//! they are; crashes go to `fuzz/artifacts/<target>/`.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::util;

/// Every target, in the order they run.
pub(crate) const TARGETS: &[&str] = &[
    "grant_spec",
    "config_yaml",
    "policy_cedar",
    "state_journal",
    "ring_event",
    "dns_query",
    "api_router",
];

/// Targets that load the kernel programs (a real daemon), so need root.
const NEEDS_ROOT: &[&str] = &["api_router"];

/// Targets that keep a runtime and a daemon across inputs: their background threads
/// leave more allocations than frees after most inputs, so libFuzzer ran the leak sanitizer's
/// whole-heap scan after most of them (half of `api_router`'s time, by `perf`). Memory
/// that grows over a long run shows in libFuzzer's `rss` and its `-rss_limit_mb`.
const NO_LEAK_CHECK: &[&str] = &["api_router"];

/// Where the targets' scratch files go (`TMPDIR`): tmpfs when the machine has it. The
/// journal and daemon targets write, rename and remove files on every input; on this
/// host's ext4 that made `state_journal` 20 times slower.
fn scratch_tmp() -> Option<ScratchTmp> {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        return None;
    }
    let dir = shm.join(format!("leash-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    Some(ScratchTmp(dir))
}

/// The scratch directory, removed however the run ends (tmpfs is memory).
struct ScratchTmp(std::path::PathBuf);

impl Drop for ScratchTmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How long `cargo xtask test` runs each target.
pub(crate) const SMOKE_SECS: u64 = 10;

/// How the targets are built: optimized for the long runs; unoptimized for the smoke run
/// of `cargo xtask test`, whose cost is the build from a clean checkout, not the runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Build {
    Release,
    Dev,
}

/// One target's run.
struct Run {
    target: &'static str,
    execs: u64,
    secs: f64,
}

/// Builds every target, then runs `target` (or all) for `secs` seconds each, one at a
/// time in one process. A crash fails the run and names the input.
pub(crate) fn run(
    target: Option<&str>,
    secs: u64,
    runs: Option<u64>,
    build: Build,
) -> anyhow::Result<()> {
    let targets: Vec<&'static str> = match target {
        Some(t) => vec![TARGETS.iter().copied().find(|n| *n == t).with_context(|| {
            format!("no fuzz target {t:?}; the targets: {}", TARGETS.join(", "))
        })?],
        None => TARGETS.to_vec(),
    };
    let root = util::is_root().context("could not tell whether this runs as root")?;
    if !root && targets.iter().any(|t| NEEDS_ROOT.contains(t)) {
        bail!(
            "the {} target loads the kernel programs and must run as root (sudo -E cargo xtask fuzz)",
            NEEDS_ROOT.join(", ")
        );
    }
    util::require_bpf_linker()?;
    let started = Instant::now();
    util::run(fuzz_cargo().arg("build").args(profile(build)))?;
    eprintln!("fuzz: built the targets in {:.0?}", started.elapsed());
    let mut results = Vec::new();
    for t in targets {
        results.push(run_one(t, secs, runs, build)?);
    }
    eprintln!("fuzz: all targets ran without a crash");
    for r in &results {
        eprintln!(
            "fuzz: {:<14} {:>10} executions in {:>6.0} s ({:.0}/s)",
            r.target,
            r.execs,
            r.secs,
            r.execs as f64 / r.secs.max(0.001)
        );
    }
    Ok(())
}

/// `cargo +nightly fuzz` from the workspace root (it finds `fuzz/`).
fn fuzz_cargo() -> Command {
    let mut cmd = util::cargo();
    cmd.args(["+nightly", "fuzz"]);
    cmd
}

/// The build flag of `cargo fuzz build|run`.
const fn profile(build: Build) -> Option<&'static str> {
    match build {
        Build::Release => None,
        Build::Dev => Some("--dev"),
    }
}

fn run_one(
    target: &'static str,
    secs: u64,
    runs: Option<u64>,
    build: Build,
) -> anyhow::Result<Run> {
    let root = util::workspace_root();
    let scratch = util::target_dir().join("fuzz-corpus").join(target);
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("could not create {}", scratch.display()))?;
    let mut cmd = fuzz_cargo();
    cmd.args(["run"])
        .args(profile(build))
        .arg(target)
        .arg(&scratch)
        .arg(root.join("fuzz").join("corpus").join(target))
        // One process on one core: libFuzzer's default (`-jobs` would fork workers that
        // log to files of their own).
        .arg("--")
        // An input slower than this is a hang. The unoptimized smoke build is slow, and
        // `api_router`'s first input also starts its daemon, programs and all.
        .arg(format!(
            "-timeout={}",
            match build {
                Build::Release => 20,
                Build::Dev => 600,
            }
        ))
        .arg("-rss_limit_mb=4096")
        .arg("-print_final_stats=1")
        .arg(format!("-max_total_time={secs}"));
    if NO_LEAK_CHECK.contains(&target) {
        cmd.arg("-detect_leaks=0");
    }
    let tmp = scratch_tmp();
    if let Some(dir) = &tmp {
        cmd.env("TMPDIR", &dir.0);
    }
    if let Some(n) = runs {
        cmd.arg(format!("-runs={n}"));
    }
    let line = util::display(&cmd);
    eprintln!("$ {line}");
    let started = Instant::now();
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let mut execs = 0;
    let stderr = child.stderr.take().context("no stderr")?;
    // By bytes: a crash report may print the input, which need not be UTF-8.
    for l in BufReader::new(stderr).split(b'\n') {
        let l = match l {
            Ok(l) => l,
            Err(e) => {
                // Not left running unseen.
                let _ = child.kill();
                let _ = child.wait();
                return Err(e).context("reading libFuzzer's output");
            }
        };
        let l = String::from_utf8_lossy(&l);
        if let Some(n) = l.strip_prefix("stat::number_of_executed_units:") {
            execs = n.trim().parse().unwrap_or(0);
        }
        // libFuzzer's progress lines are many; its findings and stats are kept.
        if !l.starts_with('#') || l.contains("DONE") {
            eprintln!("{l}");
        }
    }
    let status = child.wait().context("waiting for libFuzzer")?;
    let secs = started.elapsed().as_secs_f64();
    drop(tmp);
    if !status.success() {
        bail!(
            "`{line}` failed ({status}): a crash or an invariant broken; the input is under fuzz/artifacts/{target}/"
        );
    }
    Ok(Run {
        target,
        execs,
        secs,
    })
}

/// `cargo xtask test`'s step: every target for [`SMOKE_SECS`] from its corpus.
pub(crate) fn smoke() -> anyhow::Result<()> {
    run(None, SMOKE_SECS, None, Build::Dev)
}
