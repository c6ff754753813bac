//! Development tasks for leash: `cargo xtask <command>` (see README.md).
//!
//! Every step shells out to the same tools a developer would run by hand and names the
//! command when it fails, so a failure can be reproduced without reading this code.

mod bench;
mod build;
mod fuzz;
mod run;
mod setup;
mod soak;
mod test;
mod util;
mod vm;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
#[command(about = "Development tasks for leash")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Installs nightly with rust-src, bpf-linker, cargo-fuzz and apt packages
    /// (idempotent).
    Setup,
    /// Builds the workspace; the eBPF object is built and embedded by agent-userspace.
    Build {
        /// Builds with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Runs `setup`, fmt, clippy (host and eBPF), unit tests, then the privileged
    /// integration tests (root).
    Test {
        /// Passed to the integration test binary, e.g. a test name filter.
        #[arg(last = true, value_name = "TEST_FILTER")]
        filters: Vec<String>,
    },
    /// Runs `setup`, then builds and runs `leash daemon` with the embedded defaults
    /// (root).
    Run {
        /// Extra arguments for `leash daemon`.
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Runs the cargo-fuzz targets in fuzz/ (nightly, libFuzzer), each from its committed
    /// corpus, one after another on one core (root: `api_router` loads the programs).
    Fuzz {
        /// One target (default: all of them, in turn).
        #[arg(long, value_name = "TARGET")]
        target: Option<String>,
        /// Seconds each target runs.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        time: u64,
        /// Stops a target after this many executions, if that comes first.
        #[arg(long, value_name = "N")]
        runs: Option<u64>,
        /// Builds unoptimized, as `cargo xtask test`'s smoke run does (quicker to
        /// build, slower to run).
        #[arg(long)]
        dev: bool,
    },
    /// Measures the costs reported in BENCHMARKS.md.
    Bench {
        /// Where to write the report [default: BENCHMARKS.md in the workspace root].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// A one-minute smoke run with fewer rounds and tasks (figures are rough).
        #[arg(long)]
        quick: bool,
    },
    /// The kill -9 soak (root): concurrent tasks while the daemon is killed and
    /// restarted, a prober checking enforcement throughout, then the leak, counter,
    /// audit and memory checks (figures in RELIABILITY.md).
    Soak {
        /// How long the workload runs.
        #[arg(long, value_name = "N", default_value_t = soak::CI_MINUTES)]
        minutes: f64,
        /// Concurrent workers, each running one task at a time [default: 32].
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
    },
    /// Runs the integration tests on another kernel in qemu, once per backend: builds
    /// them statically (musl), fetches the kernel from Debian's packages (cached under
    /// target/vm/), boots it with BPF LSM on, and reads one success/failure line.
    Vm {
        /// Kernels to boot: a Debian series (6.1, 6.12: the newest
        /// linux-image-<series>.*-amd64-unsigned) or a path to a vmlinuz/bzImage or to a
        /// folder holding one. Repeat the option or separate with commas.
        #[arg(
            long,
            value_name = "SERIES|PATH",
            value_delimiter = ',',
            default_value = "6.1"
        )]
        kernel: Vec<String>,
        /// The backend(s) the tests load; `both` boots once for each.
        #[arg(long, value_enum, default_value_t = vm::BackendArg::Both)]
        backend: vm::BackendArg,
        /// qemu accelerator; `auto` tries KVM and falls back to TCG when the guest does
        /// not boot (remembered in target/vm/kvm-unusable).
        #[arg(long, value_enum, default_value_t = vm::AccelArg::Auto)]
        accel: vm::AccelArg,
        /// Seconds one boot (all test binaries of one backend) may take.
        #[arg(long, value_name = "SECS", default_value_t = 2400)]
        timeout: u64,
        /// Guest memory in MiB.
        #[arg(long, value_name = "MIB", default_value_t = 2048)]
        memory: u32,
        /// Guest CPUs.
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// Passed to every integration test binary in the guest, e.g. a test name filter.
        #[arg(last = true, value_name = "TEST_FILTER")]
        filters: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(setup::Mode::Explicit),
        Command::Build { release } => build::run(release),
        Command::Test { filters } => test::run(&filters),
        Command::Run { args } => run::run(&args),
        Command::Fuzz {
            target,
            time,
            runs,
            dev,
        } => {
            setup::run(setup::Mode::Implicit)?;
            let build = if dev {
                fuzz::Build::Dev
            } else {
                fuzz::Build::Release
            };
            fuzz::run(target.as_deref(), time, runs, build)
        }
        Command::Bench { out, quick } => bench::run(out, quick),
        Command::Soak { minutes, workers } => soak::run(minutes, workers),
        Command::Vm {
            kernel,
            backend,
            accel,
            timeout,
            memory,
            cpus,
            filters,
        } => vm::run(&vm::Options {
            kernels: kernel,
            backend,
            accel,
            timeout: Duration::from_secs(timeout),
            memory_mb: memory,
            cpus,
            filters,
        }),
    }
}
