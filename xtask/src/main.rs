//! Development tasks for leash: `cargo xtask <command>` (see README.md).
//!
//! Every step shells out to the same tools a developer would run by hand and names the
//! command when it fails, so a failure can be reproduced without reading this code.

mod bench;
mod build;
mod run;
mod setup;
mod test;
mod util;

use std::path::PathBuf;

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
    /// Installs nightly with rust-src, bpf-linker and apt packages (idempotent).
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
    /// Measures the costs reported in BENCHMARKS.md.
    Bench {
        /// Where to write the report [default: BENCHMARKS.md in the workspace root].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(setup::Mode::Explicit),
        Command::Build { release } => build::run(release),
        Command::Test { filters } => test::run(&filters),
        Command::Run { args } => run::run(&args),
        Command::Bench { out } => bench::run(out),
    }
}
